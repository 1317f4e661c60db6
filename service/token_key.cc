// service/token_key.cc: the key file and HMAC-SHA256 with precomputed pads.

// OpenSSL 3 deprecates the low-level SHA256_Init/Update/Final. We use them on
// purpose: HMAC with the inner and outer states precomputed once (RFC 2104
// section 4) needs a copyable hash state, and SHA256_CTX is a plain struct that
// copies with one memcpy. The EVP_MAC / EVP_MD_CTX route allocates per call and
// costs about 1 us per digest; this path is two SHA-256 finalizations and runs on
// every authentication. The low-level functions still use SHA-NI / AVX2 code.
#define OPENSSL_SUPPRESS_DEPRECATED

#include "service/token_key.h"

#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <type_traits>
#include <utility>

#include "common/fs.h"
#include "service/hmac_sha256_x86.h"

namespace patledger::service {

struct TokenKey::Pads {
  SHA256_CTX inner;  // after absorbing (key XOR 0x36...) — one 64-byte block
  SHA256_CTX outer;  // after absorbing (key XOR 0x5c...)
  bool sha_ni = internal::HaveShaNi();  // short messages take the two-compression path
};
static_assert(std::is_same_v<SHA_LONG, std::uint32_t>,
              "SHA256_CTX::h is handed to HmacSha256OneBlockShaNi as eight words");

namespace {

constexpr std::size_t kBlockBytes = 64;  // SHA-256 block size, "B" in RFC 2104
constexpr std::string_view kFingerprintMessage = "patledger key fingerprint";

std::string Errno(std::string_view what, const std::string& path, int err) {
  std::string m(what);
  m += " ";
  m += path;
  m += ": ";
  m += std::strerror(err);
  return m;
}

// Wipes a buffer when it goes out of scope, whichever way the function returns.
class ScopedCleanse {
 public:
  ScopedCleanse(void* p, std::size_t n) : p_(p), n_(n) {}
  ~ScopedCleanse() { OPENSSL_cleanse(p_, n_); }
  ScopedCleanse(const ScopedCleanse&) = delete;
  ScopedCleanse& operator=(const ScopedCleanse&) = delete;

 private:
  void* p_;
  std::size_t n_;
};

class ScopedFd {
 public:
  explicit ScopedFd(int fd) : fd_(fd) {}
  ~ScopedFd() {
    if (fd_ >= 0) ::close(fd_);
  }
  ScopedFd(const ScopedFd&) = delete;
  ScopedFd& operator=(const ScopedFd&) = delete;
  int get() const { return fd_; }
  // Closes now and reports close()'s error (a deferred write error on some
  // file systems).
  int Close() {
    const int rc = ::close(fd_);
    fd_ = -1;
    return rc;
  }

 private:
  int fd_;
};

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

Status WriteAll(int fd, const char* p, std::size_t n, const std::string& path) {
  while (n > 0) {
    const ssize_t w = ::write(fd, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      return Status::IOError(Errno("cannot write key file", path, errno));
    }
    p += w;
    n -= static_cast<std::size_t>(w);
  }
  return Status::OK();
}

// Writes the file contents for `key` into `out`.
void Encode(std::span<const std::uint8_t, TokenKey::kKeyBytes> key,
            std::array<char, TokenKey::kFileBytes>& out) {
  static constexpr char kHex[] = "0123456789abcdef";
  char* p =
      std::copy(TokenKey::kFileHeader.begin(), TokenKey::kFileHeader.end(), out.data());
  for (std::uint8_t b : key) {
    *p++ = kHex[b >> 4];
    *p++ = kHex[b & 0xF];
  }
  *p = '\n';
}

}  // namespace

TokenKey::TokenKey(std::span<const std::uint8_t> key) : pads_(std::make_unique<Pads>()) {
  std::array<std::uint8_t, kBlockBytes> k0{};  // the key, zero-padded to B bytes
  std::array<std::uint8_t, kBlockBytes> pad;
  ScopedCleanse wipe_k0(k0.data(), k0.size());
  ScopedCleanse wipe_pad(pad.data(), pad.size());
  if (key.size() > kBlockBytes) {
    SHA256_CTX c;
    SHA256_Init(&c);
    SHA256_Update(&c, key.data(), key.size());
    SHA256_Final(k0.data(), &c);
    OPENSSL_cleanse(&c, sizeof c);
  } else {
    std::copy(key.begin(), key.end(), k0.begin());
  }
  for (std::size_t i = 0; i < kBlockBytes; ++i) pad[i] = k0[i] ^ 0x36;
  SHA256_Init(&pads_->inner);
  SHA256_Update(&pads_->inner, pad.data(), pad.size());
  for (std::size_t i = 0; i < kBlockBytes; ++i) pad[i] = k0[i] ^ 0x5c;
  SHA256_Init(&pads_->outer);
  SHA256_Update(&pads_->outer, pad.data(), pad.size());

  const TokenDigest d = Digest(kFingerprintMessage);
  for (std::size_t i = 0; i < 8; ++i) fingerprint_ = (fingerprint_ << 8) | d[i];
}

TokenKey TokenKey::FromBytes(std::span<const std::uint8_t> key) { return TokenKey(key); }

TokenKey::TokenKey(TokenKey&& other) noexcept
    : pads_(std::move(other.pads_)), fingerprint_(std::exchange(other.fingerprint_, 0)) {}

TokenKey& TokenKey::operator=(TokenKey&& other) noexcept {
  if (this != &other) {
    if (pads_) OPENSSL_cleanse(pads_.get(), sizeof(Pads));
    pads_ = std::move(other.pads_);
    fingerprint_ = std::exchange(other.fingerprint_, 0);
  }
  return *this;
}

TokenKey::~TokenKey() {
  if (pads_) OPENSSL_cleanse(pads_.get(), sizeof(Pads));
}

TokenDigest TokenKey::Digest(std::string_view token) const {
  TokenDigest out;
  // Every well-formed token (at most 16 + 36 characters) takes this path on a CPU
  // with SHA-NI: two compressions, nothing else (service/hmac_sha256_x86.h).
  if (token.size() <= internal::kMaxOneBlockMessage && pads_->sha_ni) {
    internal::HmacSha256OneBlockShaNi(pads_->inner.h, pads_->outer.h, token.data(),
                                      token.size(), out.data());
    return out;
  }
  // No wipe of `c` is needed: each SHA256_Final compresses at least one more block
  // (overwriting the key-derived chaining value) and clears its data buffer.
  SHA256_CTX c = pads_->inner;
  SHA256_Update(&c, token.data(), token.size());
  SHA256_Final(out.data(), &c);  // out = H((K ^ ipad) || token)
  c = pads_->outer;
  SHA256_Update(&c, out.data(), out.size());
  SHA256_Final(out.data(), &c);  // out = H((K ^ opad) || inner)
  return out;
}

Result<TokenKey> TokenKey::Create(const std::string& path) {
  std::array<std::uint8_t, kKeyBytes> key;
  std::array<char, kFileBytes> text;
  ScopedCleanse wipe_key(key.data(), key.size());
  ScopedCleanse wipe_text(text.data(), text.size());
  if (RAND_bytes(key.data(), static_cast<int>(key.size())) != 1) {
    return Err(Status::Internal("RAND_bytes failed: the CSPRNG is unavailable"));
  }
  Encode(key, text);

  // Written whole and synced under a scratch name, then published with link(2),
  // which never replaces an existing name (not even a dangling symlink): a crash at
  // any moment leaves either no key file or a complete one, never a torn one that
  // would brick the data directory. A scratch file left by a crash is replaced.
  const std::string partial = path + ".partial";
  if (::unlink(partial.c_str()) != 0 && errno != ENOENT) {
    return Err(Status::IOError(Errno("cannot remove", partial, errno)));
  }
  ScopedFd fd(::open(partial.c_str(), O_CREAT | O_EXCL | O_WRONLY | O_NOFOLLOW | O_CLOEXEC,
                     0600));
  if (fd.get() < 0) {
    return Err(Status::IOError(Errno("cannot create key file", partial, errno)));
  }
  Status s = WriteAll(fd.get(), text.data(), text.size(), partial);
  if (s.ok() && ::fsync(fd.get()) != 0) {
    s = Status::IOError(Errno("cannot fsync key file", partial, errno));
  }
  if (fd.Close() != 0 && s.ok()) {
    s = Status::IOError(Errno("cannot close key file", partial, errno));
  }
  bool published = false;
  if (s.ok()) {
    if (::link(partial.c_str(), path.c_str()) == 0) {
      published = true;
    } else {
      const int err = errno;
      s = err == EEXIST ? Status::AlreadyExists("key file " + path + " exists")
                        : Status::IOError(Errno("cannot create key file", path, err));
    }
  }
  ::unlink(partial.c_str());
  if (s.ok()) s = SyncDirectory(DirectoryOf(path));
  if (!s.ok()) {
    if (published) ::unlink(path.c_str());  // ours, and not durable: leave nothing
    return Err(std::move(s));
  }
  return TokenKey(key);
}

Result<TokenKey> TokenKey::Load(const std::string& path) {
  ScopedFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) {
    const int err = errno;
    if (err == ENOENT)
      return Err(Status::NotFound("key file " + path + " does not exist"));
    if (err == EACCES)
      return Err(Status::PermissionDenied(Errno("cannot open", path, err)));
    return Err(Status::IOError(Errno("cannot open key file", path, err)));
  }
  struct stat st;
  if (::fstat(fd.get(), &st) != 0) {
    return Err(Status::IOError(Errno("cannot stat key file", path, errno)));
  }
  if (!S_ISREG(st.st_mode)) {
    return Err(Status::FailedPrecondition("key file " + path + " is not a regular file"));
  }
  if ((st.st_mode & 077) != 0) {
    char mode[8];
    std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(st.st_mode & 07777));
    return Err(Status::PermissionDenied("key file " + path + " has mode " + mode +
                                        " and is accessible by group or others; run: "
                                        "chmod 600 " +
                                        path));
  }
  if (st.st_size != static_cast<off_t>(kFileBytes)) {
    return Err(Status::Corruption("key file " + path + ": " + std::to_string(st.st_size) +
                                  " bytes, expected " + std::to_string(kFileBytes)));
  }

  // One byte more than expected, to notice a file that grew since fstat.
  std::array<char, kFileBytes + 1> text;
  std::array<std::uint8_t, kKeyBytes> key;
  ScopedCleanse wipe_text(text.data(), text.size());
  ScopedCleanse wipe_key(key.data(), key.size());
  std::size_t n = 0;
  while (n < text.size()) {
    const ssize_t r = ::read(fd.get(), text.data() + n, text.size() - n);
    if (r < 0) {
      if (errno == EINTR) continue;
      return Err(Status::IOError(Errno("cannot read key file", path, errno)));
    }
    if (r == 0) break;
    n += static_cast<std::size_t>(r);
  }
  if (n != kFileBytes) {
    return Err(Status::Corruption("key file " + path + ": " + std::to_string(n) +
                                  " bytes read, expected " + std::to_string(kFileBytes)));
  }
  const std::string_view contents(text.data(), n);
  if (!contents.starts_with(kFileHeader)) {
    return Err(Status::Corruption(
        "key file " + path + ": first line is not \"" +
        std::string(kFileHeader.substr(0, kFileHeader.size() - 1)) + "\""));
  }
  const std::string_view hex = contents.substr(kFileHeader.size());
  bool ok = hex.back() == '\n';
  for (std::size_t i = 0; i < kKeyBytes; ++i) {
    const int hi = HexValue(hex[2 * i]);
    const int lo = HexValue(hex[2 * i + 1]);
    ok &= hi >= 0 && lo >= 0;
    key[i] = static_cast<std::uint8_t>(((hi & 0xF) << 4) | (lo & 0xF));
  }
  if (!ok) {
    return Err(Status::Corruption("key file " + path +
                                  ": second line is not 64 hex digits and a newline"));
  }
  return TokenKey(key);
}

}  // namespace patledger::service
