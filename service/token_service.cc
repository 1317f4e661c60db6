#include "service/token_service.h"

#include <algorithm>
#include <array>
#include <charconv>
#include <filesystem>
#include <utility>

#include "common/fs.h"
#include "service/token_format.h"

namespace patledger::service {
namespace {

namespace fs = std::filesystem;

constexpr std::size_t kMaxNameLength = 255;
constexpr std::size_t kMaxDescriptionLength = 255;
constexpr std::size_t kMaxUsernameLength = 255;
constexpr std::int32_t kRotationDefaultDays = 7;

std::string KeyPath(const ServiceOptions& o) {
  return o.key_path.empty() ? (fs::path(o.data_dir) / "token.key").string() : o.key_path;
}

std::string LedgerPath(const ServiceOptions& o) {
  return (fs::path(o.data_dir) / "ledger").string();
}

// Counts characters, not bytes, of UTF-8 text (names are shown to people).
std::size_t Utf8Length(std::string_view s) {
  std::size_t n = 0;
  for (unsigned char c : s) n += (c & 0xC0) != 0x80;
  return n;
}

Status ValidateUsername(std::string_view username) {
  if (username.empty() || username.size() > kMaxUsernameLength) {
    return Status::InvalidArgument("username must be 1.." +
                                   std::to_string(kMaxUsernameLength) + " characters");
  }
  for (char c : username) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                    (c >= '0' && c <= '9') || c == '_' || c == '-' || c == '.';
    if (!ok) {
      return Status::InvalidArgument(
          "username may contain only letters, digits, '_', '-' and '.'");
    }
  }
  if (username.front() >= '0' && username.front() <= '9' &&
      username.find_first_not_of("0123456789") == std::string_view::npos) {
    return Status::InvalidArgument("username cannot be all digits (it would read as an id)");
  }
  return Status::OK();
}

// True if `text` holds something that may be a token: `prefix` followed by 20 or more
// base62 characters (a token, even mistyped or cut short), or a 36-character base62
// word whose checksum is a token's (a token without its prefix). Such text is refused
// in names and descriptions, so a token pasted by mistake never reaches the ledger (and
// so never a log or a tool's output). Ordinary long words and hashes pass.
bool MayHoldToken(std::string_view text, std::string_view prefix) {
  auto base62 = [](char c) {
    return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z');
  };
  std::size_t run = 0;
  for (std::size_t i = 0; i <= text.size(); ++i) {
    if (i < text.size() && base62(text[i])) {
      ++run;
      if (run == 20 && !prefix.empty() && i + 1 >= 20 + prefix.size() &&
          text.substr(i + 1 - 20 - prefix.size(), prefix.size()) == prefix) {
        return true;
      }
      continue;
    }
    if (run == kTokenBodyLength && !prefix.empty() &&
        CheckTokenShape(std::string(prefix).append(text.substr(i - run, run)), prefix) ==
            TokenShape::kOk) {
      return true;
    }
    run = 0;
  }
  return false;
}

Status RefuseTokenLike(std::string_view field, std::string_view text,
                       std::string_view prefix) {
  if (!MayHoldToken(text, prefix)) return Status::OK();
  return Status::InvalidArgument(std::string(field) +
                                 " looks like it contains a token; a token's secret must "
                                 "never be stored (revoke it if it was pasted by mistake)");
}

}  // namespace

std::string_view AuthVerdictName(AuthVerdict v) {
  switch (v) {
    case AuthVerdict::kOk: return "ok";
    case AuthVerdict::kMalformed: return "malformed";
    case AuthVerdict::kUnknown: return "unknown";
    case AuthVerdict::kExpired: return "expired";
    case AuthVerdict::kRevoked: return "revoked";
    case AuthVerdict::kOwnerBlocked: return "owner_blocked";
    case AuthVerdict::kInsufficientScope: return "insufficient_scope";
  }
  return "unknown";
}

TokenService::TokenService(const ServiceOptions& options, TokenKey key)
    : policy_(options.policy),
      clock_(options.clock ? options.clock : SystemClock::Get()),
      key_(std::move(key)),
      state_(std::make_unique<replay::State>(options.expected_tokens)) {}

TokenService::~TokenService() = default;

Result<InitResult> TokenService::Init(const ServiceOptions& options) {
  if (!IsValidTokenPrefix(options.policy.token_prefix)) {
    return Err(Status::InvalidArgument("token prefix must be 1..16 of [A-Za-z0-9_-]"));
  }
  const std::string ledger_path = LedgerPath(options);
  const std::string key_path = KeyPath(options);
  if (fs::exists(ledger_path)) {
    return Err(Status::AlreadyExists("a ledger already exists in " + ledger_path));
  }
  std::error_code ec;
  fs::create_directories(options.data_dir, ec);
  if (ec) {
    return Err(Status::IOError("cannot create " + options.data_dir + ": " + ec.message()));
  }
  // A crash at any moment must leave a directory that a later Init (or `serve`) takes:
  // the ledger is built with its genesis under a scratch name and renamed into place
  // only when complete (the rename is the commit point), and the key is published
  // whole before that (TokenKey::Create). So a key without a ledger is a key whose
  // ledger never came to be: it is adopted, not refused; a scratch ledger is discarded.
  const std::string building = ledger_path + ".partial";
  fs::remove_all(building, ec);
  if (ec) return Err(Status::IOError("cannot remove " + building + ": " + ec.message()));
  auto key = fs::exists(key_path) ? TokenKey::Load(key_path) : TokenKey::Create(key_path);
  if (!key) return Err(key.error());
  const std::uint64_t fingerprint = key->Fingerprint();

  ledger::Options lo;
  lo.create_if_missing = true;
  lo.error_if_exists = true;
  lo.env = options.env;
  auto service = std::unique_ptr<TokenService>(new TokenService(options, std::move(*key)));
  lo.listener = service->state_.get();
  auto ledger = ledger::Ledger::Open(building, lo);
  if (!ledger) return Err(ledger.error());
  service->ledger_ = std::move(*ledger);
  service->prefix_ = options.policy.token_prefix;

  // Genesis, the root user and its token: one transaction.
  Actor operator_actor;
  const schema::EventContext ctx = service->Context(operator_actor);
  auto secret = GenerateToken(service->prefix_);
  if (!secret) return Err(secret.error());
  const std::int32_t today = DayOf(ctx.recorded_at_us);
  std::optional<std::int32_t> expires;
  if (options.policy.max_lifetime_days > 0) expires = today + options.policy.max_lifetime_days;
  schema::TokenCreatedFields root_token;
  root_token.token_id = 1;
  root_token.user_id = 1;
  root_token.name = "root";
  root_token.description = "made by patledger init";
  root_token.scopes = kApi | kSudo;
  root_token.expires_day = expires.value_or(index::kNoExpiry);
  root_token.digest = service->key_.Digest(*secret);
  std::vector<std::string> events;
  events.push_back(
      schema::BuildLedgerInitialized(ctx, fingerprint, service->prefix_));
  events.push_back(schema::BuildUserRegistered(ctx, 1, "root", "Administrator",
                                               "root@localhost", /*admin=*/true));
  events.push_back(schema::BuildTokenCreated(ctx, root_token));
  auto seq = service->ledger_->Append(std::move(events));
  if (!seq) return Err(seq.error());
  PATLEDGER_RETURN_ERR_IF_ERROR(service->state_->health());

  InitResult result;
  result.root_user_id = 1;
  auto info = service->GetToken(1);
  if (!info) return Err(info.error());
  result.root_token.info = std::move(*info);
  result.root_token.secret = std::move(*secret);

  service->ledger_.reset();  // closed: every file of it is written and synced
  fs::rename(building, ledger_path, ec);
  if (ec) {
    return Err(Status::IOError("cannot rename " + building + " to " + ledger_path + ": " +
                               ec.message()));
  }
  PATLEDGER_RETURN_ERR_IF_ERROR(SyncDirectory(DirectoryOf(ledger_path)));
  return result;
}

Result<std::unique_ptr<TokenService>> TokenService::Open(const ServiceOptions& options) {
  const std::string ledger_path = LedgerPath(options);
  if (!fs::exists(ledger_path)) {
    return Err(Status::NotFound("no ledger in " + options.data_dir +
                                " (run `patledger init` first)"));
  }
  auto key = TokenKey::Load(KeyPath(options));
  if (!key) return Err(key.error());
  auto service = std::unique_ptr<TokenService>(new TokenService(options, std::move(*key)));
  ledger::Options lo;
  lo.read_only = options.read_only;
  lo.env = options.env;
  lo.listener = service->state_.get();
  auto ledger = ledger::Ledger::Open(ledger_path, lo);
  if (!ledger) return Err(ledger.error());
  service->ledger_ = std::move(*ledger);

  replay::ReplayLimit limit = options.read_only ? options.replay_to : replay::ReplayLimit{};
  Status s = replay::Replay(*service->ledger_, service->state_.get(), limit);
  if (!s.ok()) return Err(s.WithContext("replaying " + ledger_path));
  const replay::State& st = *service->state_;
  if (!st.initialized() && options.read_only &&
      (limit.to_seq != UINT64_MAX || limit.to_time_us != INT64_MAX)) {
    return Err(Status::NotFound("the ledger did not exist yet at that point"));
  }
  if (!st.initialized()) {
    return Err(Status::Corruption("ledger " + ledger_path + " has no LedgerInitialized event"));
  }
  if (st.key_fingerprint() != service->key_.Fingerprint()) {
    return Err(Status::FailedPrecondition("the key file " + KeyPath(options) +
                                          " does not belong to this ledger (fingerprint "
                                          "mismatch)"));
  }
  service->prefix_ = st.token_prefix();
  service->next_token_id_.store(st.max_token_id() + 1);
  return service;
}

AuthResult TokenService::Authenticate(std::string_view token, std::int64_t now_us,
                                      ScopeSet required) const {
  if (CheckTokenShape(token, prefix_) != TokenShape::kOk) {
    AuthResult r;
    r.verdict = AuthVerdict::kMalformed;
    return r;
  }
  const index::TokenDigest digest = key_.Digest(token);
  index::TokenEntry entry;
  if (!state_->token_index().Lookup(digest, &entry)) {
    AuthResult r;
    r.verdict = AuthVerdict::kUnknown;
    return r;
  }
  return Judge(entry, now_us, required);
}

void TokenService::AuthenticateBatch(std::span<const std::string_view> tokens,
                                     std::int64_t now_us, ScopeSet required,
                                     std::span<AuthResult> results) const {
  const index::TokenIndex& index = state_->token_index();
  for (std::size_t base = 0; base < tokens.size(); base += kAuthBatch) {
    const std::size_t n = std::min(kAuthBatch, tokens.size() - base);
    // Pass 1: shape and digest of the whole group; no access to the index.
    std::array<index::TokenDigest, kAuthBatch> digests;
    std::array<bool, kAuthBatch> well_formed;
    for (std::size_t i = 0; i < n; ++i) {
      well_formed[i] = CheckTokenShape(tokens[base + i], prefix_) == TokenShape::kOk;
      if (well_formed[i]) digests[i] = key_.Digest(tokens[base + i]);
    }
    // Pass 2: prefetch every home slot back to back, so the group's misses overlap.
    // (Prefetching each slot as soon as its digest was ready, inside pass 1, measured
    // ~1.6x slower at 10M tokens: the misses then interleave with the SHA-NI work.)
    for (std::size_t i = 0; i < n; ++i) {
      if (well_formed[i]) index.Prefetch(digests[i]);
    }
    // Pass 3: the lookups (mostly cache hits by now) and the verdicts, as Authenticate.
    for (std::size_t i = 0; i < n; ++i) {
      AuthResult& r = results[base + i];
      index::TokenEntry entry;
      if (!well_formed[i]) {
        r = AuthResult{};
        r.verdict = AuthVerdict::kMalformed;
      } else if (!index.Lookup(digests[i], &entry)) {
        r = AuthResult{};
        r.verdict = AuthVerdict::kUnknown;
      } else {
        r = Judge(entry, now_us, required);
      }
    }
  }
}

AuthResult TokenService::Judge(const index::TokenEntry& entry, std::int64_t now_us,
                               ScopeSet required) const {
  AuthResult r;
  r.user_id = entry.user_id;
  r.token_id = entry.token_id;
  const std::uint32_t flags = state_->user_flags().Get(entry.user_id);
  const bool admin = (flags & index::UserFlags::kAdmin) != 0;
  r.scopes = Effective(entry.scopes, admin);
  if (entry.revoked) {
    r.verdict = AuthVerdict::kRevoked;
  } else if (entry.expires_day != index::kNoExpiry && DayOf(now_us) >= entry.expires_day) {
    r.verdict = AuthVerdict::kExpired;
  } else if ((flags & index::UserFlags::kExists) == 0) {
    r.verdict = AuthVerdict::kUnknown;
  } else if ((flags & index::UserFlags::kBlocked) != 0) {
    r.verdict = AuthVerdict::kOwnerBlocked;
  } else if ((r.scopes & required) != required) {
    r.verdict = AuthVerdict::kInsufficientScope;
    r.missing = required & ~r.scopes;
  } else {
    r.verdict = AuthVerdict::kOk;
  }
  return r;
}

schema::EventContext TokenService::Context(const Actor& actor) const {
  schema::EventContext ctx;
  ctx.recorded_at_us = clock_->NowMicros();
  ctx.actor_user_id = actor.user_id;
  ctx.actor_token_id = actor.token_id;
  ctx.via_sudo = actor.via_sudo;
  ctx.client_address = actor.client_address;
  ctx.request_id = actor.request_id;
  return ctx;
}

std::optional<std::int32_t> TokenService::MaxExpiryDay() const {
  if (policy_.max_lifetime_days <= 0) return std::nullopt;
  return DayOf(clock_->NowMicros()) + policy_.max_lifetime_days + 1;
}

Status TokenService::CheckExpiry(std::optional<std::int32_t>* expires_day) const {
  const std::int32_t today = DayOf(clock_->NowMicros());
  const auto limit = MaxExpiryDay();
  if (!expires_day->has_value()) {
    // GitLab's behaviour when expiry is required: the maximum allowed lifetime.
    if (policy_.require_expiry && limit) *expires_day = *limit - 1;
    return Status::OK();
  }
  const std::int32_t day = **expires_day;
  if (day <= today) {
    return Status::InvalidArgument("expires_at must be a date after today (" +
                                   FormatDate(today) + ": a token expires at 00:00 UTC " +
                                   "on its expiry date)");
  }
  if (limit && day >= *limit) {
    return Status::InvalidArgument("Expiration date must be before " + FormatDate(*limit));
  }
  return Status::OK();
}

Result<replay::UserRecord> TokenService::RegisterUser(const Actor& actor,
                                                      std::string_view username,
                                                      std::string_view name,
                                                      std::string_view email, bool admin) {
  PATLEDGER_RETURN_ERR_IF_ERROR(ValidateUsername(username));
  if (name.empty() || Utf8Length(name) > kMaxNameLength) {
    return Err(Status::InvalidArgument("name must be 1..255 characters"));
  }
  if (email.size() > 254 || email.find('@') == std::string_view::npos) {
    return Err(Status::InvalidArgument("email must be an address with an '@'"));
  }
  PATLEDGER_RETURN_ERR_IF_ERROR(RefuseTokenLike("username", username, prefix_));
  PATLEDGER_RETURN_ERR_IF_ERROR(RefuseTokenLike("name", name, prefix_));
  PATLEDGER_RETURN_ERR_IF_ERROR(RefuseTokenLike("email", email, prefix_));
  std::lock_guard lock(users_mu_);
  if (state_->FindUserByName(username)) {
    return Err(Status::AlreadyExists("username '" + std::string(username) + "' is taken"));
  }
  const std::uint64_t id = state_->max_user_id() + 1;
  if (id > index::UserFlags::kMaxUserId) {
    return Err(Status::FailedPrecondition("the user id space is exhausted"));
  }
  std::vector<std::string> events;
  events.push_back(schema::BuildUserRegistered(Context(actor), id, username, name, email, admin));
  auto seq = ledger_->Append(std::move(events));
  if (!seq) return Err(seq.error());
  auto user = state_->FindUser(id);
  if (!user) return Err(Status::Internal("registered user " + std::to_string(id) + " missing"));
  return *user;
}

Status TokenService::BlockUser(const Actor& actor, std::uint64_t user_id) {
  std::lock_guard lock(users_mu_);
  auto user = state_->FindUser(user_id);
  if (!user) return Status::NotFound("no user " + std::to_string(user_id));
  if (user->blocked) return Status::OK();  // idempotent: nothing to record
  auto seq = ledger_->Append(
      {schema::BuildUserChanged(Context(actor), user_id, schema::UserChange::Blocked)});
  return seq ? Status::OK() : seq.error();
}

Status TokenService::UnblockUser(const Actor& actor, std::uint64_t user_id) {
  std::lock_guard lock(users_mu_);
  auto user = state_->FindUser(user_id);
  if (!user) return Status::NotFound("no user " + std::to_string(user_id));
  if (!user->blocked) return Status::OK();
  auto seq = ledger_->Append(
      {schema::BuildUserChanged(Context(actor), user_id, schema::UserChange::Unblocked)});
  return seq ? Status::OK() : seq.error();
}

Status TokenService::SetAdmin(const Actor& actor, std::uint64_t user_id, bool admin) {
  std::lock_guard lock(users_mu_);
  auto user = state_->FindUser(user_id);
  if (!user) return Status::NotFound("no user " + std::to_string(user_id));
  if (user->admin == admin) return Status::OK();
  auto change = admin ? schema::UserChange::AdminGranted : schema::UserChange::AdminRemoved;
  auto seq = ledger_->Append({schema::BuildUserChanged(Context(actor), user_id, change)});
  return seq ? Status::OK() : seq.error();
}

Result<replay::UserRecord> TokenService::FindUser(std::string_view id_or_username) const {
  std::uint64_t id = 0;
  const char* end = id_or_username.data() + id_or_username.size();
  auto [ptr, ec] = std::from_chars(id_or_username.data(), end, id);
  std::optional<replay::UserRecord> user;
  if (ec == std::errc() && ptr == end) {
    user = state_->FindUser(id);
  } else {
    user = state_->FindUserByName(id_or_username);
  }
  if (!user) {
    // GitLab's message echoes the identifier; not when it may hold a token (a token
    // pasted into the Sudo header must not come back in a response).
    if (MayHoldToken(id_or_username, prefix_)) {
      return Err(Status::NotFound("User with ID or username (" +
                                  std::to_string(id_or_username.size()) +
                                  " characters, not shown) Not Found"));
    }
    return Err(Status::NotFound("User with ID or username '" + std::string(id_or_username) +
                                "' Not Found"));
  }
  return *user;
}

Result<CreatedToken> TokenService::CreateToken(const Actor& actor,
                                               const CreateTokenRequest& request) {
  if (request.name.empty() || Utf8Length(request.name) > kMaxNameLength) {
    return Err(Status::InvalidArgument("name must be 1..255 characters"));
  }
  if (Utf8Length(request.description) > kMaxDescriptionLength) {
    return Err(Status::InvalidArgument("description must be at most 255 characters"));
  }
  if (request.scopes == 0) {
    return Err(Status::InvalidArgument("at least one scope is required"));
  }
  PATLEDGER_RETURN_ERR_IF_ERROR(RefuseTokenLike("name", request.name, prefix_));
  PATLEDGER_RETURN_ERR_IF_ERROR(RefuseTokenLike("description", request.description, prefix_));
  if ((request.scopes & ~kAllScopes) != 0) {
    return Err(Status::InvalidArgument("unknown scope bits"));
  }
  auto user = state_->FindUser(request.user_id);
  if (!user) {
    return Err(Status::NotFound("User with ID or username '" +
                                std::to_string(request.user_id) + "' Not Found"));
  }
  if (user->blocked) {
    return Err(Status::FailedPrecondition("user '" + user->username + "' is blocked"));
  }
  if ((request.scopes & kSudo) && !user->admin) {
    return Err(Status::InvalidArgument("scope sudo is only for administrators"));
  }
  std::optional<std::int32_t> expires = request.expires_day;
  PATLEDGER_RETURN_ERR_IF_ERROR(CheckExpiry(&expires));

  auto secret = GenerateToken(prefix_);
  if (!secret) return Err(secret.error());
  schema::TokenCreatedFields f;
  f.token_id = next_token_id_.fetch_add(1);
  f.user_id = request.user_id;
  f.name = request.name;
  f.description = request.description;
  f.scopes = request.scopes;
  f.expires_day = expires.value_or(index::kNoExpiry);
  f.digest = key_.Digest(*secret);
  auto seq = ledger_->Append({schema::BuildTokenCreated(Context(actor), f)});
  if (!seq) return Err(seq.error());
  auto info = GetToken(f.token_id);
  if (!info) return Err(info.error());
  return CreatedToken{std::move(*info), std::move(*secret)};
}

bool TokenService::ClaimRevocation(std::uint64_t token_id) {
  std::lock_guard lock(revoking_mu_);
  return revoking_.insert(token_id).second;
}

void TokenService::ReleaseRevocation(std::uint64_t token_id) {
  std::lock_guard lock(revoking_mu_);
  revoking_.erase(token_id);
}

Status TokenService::RevokeToken(const Actor& actor, std::uint64_t token_id,
                                 schema::RevokeReason reason) {
  if (!ClaimRevocation(token_id)) {
    return Status::FailedPrecondition("token " + std::to_string(token_id) +
                                      " is being revoked by another request");
  }
  struct Release {
    TokenService* s;
    std::uint64_t id;
    ~Release() { s->ReleaseRevocation(id); }
  } release{this, token_id};
  auto meta = state_->FindToken(token_id);
  if (!meta) return Status::NotFound("no token " + std::to_string(token_id));
  if (meta->revoked()) {
    return Status::FailedPrecondition("token " + std::to_string(token_id) +
                                      " is already revoked");
  }
  auto seq = ledger_->Append({schema::BuildTokenRevoked(Context(actor), token_id, reason)});
  return seq ? Status::OK() : seq.error();
}

Result<CreatedToken> TokenService::RotateToken(const Actor& actor, std::uint64_t token_id,
                                               std::optional<std::int32_t> expires_day) {
  if (!ClaimRevocation(token_id)) {
    return Err(Status::FailedPrecondition("token " + std::to_string(token_id) +
                                          " is being revoked by another request"));
  }
  struct Release {
    TokenService* s;
    std::uint64_t id;
    ~Release() { s->ReleaseRevocation(id); }
  } release{this, token_id};
  auto meta = state_->FindToken(token_id);
  if (!meta) return Err(Status::NotFound("no token " + std::to_string(token_id)));
  const schema::EventContext ctx = Context(actor);

  if (meta->revoked()) {
    // Reuse of a retired secret: assume it leaked and retire the whole family.
    std::vector<std::string> events;
    std::vector<std::uint64_t> claimed;
    for (std::uint64_t id : state_->Family(token_id)) {
      auto member = state_->FindToken(id);
      if (member && !member->revoked() && id != token_id && ClaimRevocation(id)) {
        claimed.push_back(id);
        events.push_back(
            schema::BuildTokenRevoked(ctx, id, schema::RevokeReason::FamilyReuse));
      }
    }
    Status s;
    if (!events.empty()) {
      auto seq = ledger_->Append(std::move(events));
      if (!seq) s = seq.error();
    }
    for (std::uint64_t id : claimed) ReleaseRevocation(id);
    if (!s.ok()) return Err(s);
    return Err(Status::Unauthenticated("token " + std::to_string(token_id) +
                                       " was already revoked: its rotation family is now "
                                       "revoked (reuse detected)"));
  }

  auto user = state_->FindUser(meta->user_id);
  if (!user || user->blocked) {
    return Err(Status::FailedPrecondition("the token's owner is blocked"));
  }
  std::optional<std::int32_t> expires = expires_day;
  if (!expires && policy_.require_expiry) {
    expires = DayOf(ctx.recorded_at_us) + kRotationDefaultDays;  // GitLab's default
  }
  PATLEDGER_RETURN_ERR_IF_ERROR(CheckExpiry(&expires));
  auto old_info = Describe(*meta);
  if (!old_info) return Err(old_info.error());
  ScopeSet scopes = meta->scopes;
  if (!user->admin) scopes &= ~kSudo;
  if (scopes == 0) {
    return Err(Status::FailedPrecondition("the token's only scope is sudo and its owner is "
                                          "no longer an administrator"));
  }

  auto secret = GenerateToken(prefix_);
  if (!secret) return Err(secret.error());
  schema::TokenCreatedFields f;
  f.token_id = next_token_id_.fetch_add(1);
  f.user_id = meta->user_id;
  f.name = old_info->name;
  f.description = old_info->description;
  f.scopes = scopes;
  f.expires_day = expires.value_or(index::kNoExpiry);
  f.digest = key_.Digest(*secret);
  f.rotated_from = token_id;
  std::vector<std::string> events;
  events.push_back(schema::BuildTokenRevoked(ctx, token_id, schema::RevokeReason::Rotated));
  events.push_back(schema::BuildTokenCreated(ctx, f));
  auto seq = ledger_->Append(std::move(events));
  if (!seq) return Err(seq.error());
  auto info = GetToken(f.token_id);
  if (!info) return Err(info.error());
  return CreatedToken{std::move(*info), std::move(*secret)};
}

Result<TokenInfo> TokenService::Describe(const replay::TokenMeta& meta) const {
  TokenInfo info;
  info.meta = meta;
  auto created = ledger_->Read(meta.created_seq);
  if (!created) return Err(created.error());
  const auto* env = schema::GetEnvelope(created->data());
  const auto* e = env->event_as_TokenCreated();
  if (e == nullptr || e->token_id() != meta.id) {
    return Err(Status::Corruption("seq " + std::to_string(meta.created_seq) +
                                  ": is not the TokenCreated of token " +
                                  std::to_string(meta.id)));
  }
  info.name = e->name() ? e->name()->str() : "";
  info.description = e->description() ? e->description()->str() : "";
  if (meta.revoked()) {
    auto revoked = ledger_->Read(meta.revoked_seq);
    if (!revoked) return Err(revoked.error());
    const auto* renv = schema::GetEnvelope(revoked->data());
    const auto* r = renv->event_as_TokenRevoked();
    if (r == nullptr || r->token_id() != meta.id) {
      return Err(Status::Corruption("seq " + std::to_string(meta.revoked_seq) +
                                    ": is not the TokenRevoked of token " +
                                    std::to_string(meta.id)));
    }
    info.revoked_at_us = renv->recorded_at_us();
    info.revoke_reason = std::string(schema::RevokeReasonName(r->reason()));
  }
  return info;
}

Result<TokenInfo> TokenService::GetToken(std::uint64_t token_id) const {
  auto meta = state_->FindToken(token_id);
  if (!meta) return Err(Status::NotFound("no token " + std::to_string(token_id)));
  return Describe(*meta);
}

Result<std::vector<TokenInfo>> TokenService::TokensOfUser(std::uint64_t user_id) const {
  std::vector<TokenInfo> out;
  for (const replay::TokenMeta& meta : state_->TokensOfUser(user_id)) {
    auto info = Describe(meta);
    if (!info) return Err(info.error());
    out.push_back(std::move(*info));
  }
  return out;
}

}  // namespace patledger::service
