// service/token_key.h: the instance key, and the token digest it defines.
//
// The ledger never stores a token, only TokenDigest = HMAC-SHA256(instance key,
// token string) (schema/events.fbs, TokenCreated.digest), and the auth index is keyed
// by that digest (index/token_index.h). So a copy of the ledger alone does not let
// anyone test guesses; with the key, a 178-bit random token is still not guessable.
// Losing the key makes every existing token unverifiable.
//
// Key file format (v1), exactly 82 bytes of ASCII:
//
//   patledger-key v1\n          17 bytes: magic and version
//   <64 hex digits>\n           65 bytes: the 32-byte key, lowercase when written
//                               (uppercase accepted when read)
//
// It must be a regular file that only its owner can access (mode 0600 or 0400):
// Load refuses a file that is group- or other-accessible.
//
// Digest() is HMAC-SHA256 (RFC 2104) computed from SHA-256 states precomputed once
// (RFC 2104 section 4): the states after absorbing key XOR ipad and key XOR opad.
// Each Digest() starts from them and does two compressions (a message of at most 55
// bytes, every token, on a CPU with SHA-NI: service/hmac_sha256_x86.h) or two
// OpenSSL finalizations (longer messages, other CPUs): no allocation, no lock.
// Those states are as secret as the key; they are the only form in which TokenKey
// keeps it, and they are wiped (OPENSSL_cleanse) when the TokenKey is destroyed.
//
// Thread safety: Digest() and Fingerprint() are const and may run concurrently from
// any number of threads. Create/Load/FromBytes are independent of each other.

#ifndef PATLEDGER_SERVICE_TOKEN_KEY_H_
#define PATLEDGER_SERVICE_TOKEN_KEY_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>

#include "common/status.h"
#include "index/token_index.h"

namespace patledger::service {

// The same type the index is keyed by (and schema::Digest): 32 bytes.
using TokenDigest = index::TokenDigest;

class TokenKey {
 public:
  static constexpr std::size_t kKeyBytes = 32;
  static constexpr std::string_view kFileHeader = "patledger-key v1\n";
  static constexpr std::size_t kFileBytes = kFileHeader.size() + 2 * kKeyBytes + 1;
  static_assert(kFileBytes == 82, "documented above");

  // Generates a new random key (RAND_bytes) and writes it to `path` as a new file of
  // mode 0600: written and fsynced as `path`.partial, published with link(2) (never
  // replaces an existing name), then the directory is fsynced — so the key is durable
  // before any digest made with it is, and a crash leaves no torn key file.
  // Errors: AlreadyExists if `path` exists (even as a symlink; nothing is
  // overwritten); IOError if it cannot be written (no file is left behind);
  // Internal if the CSPRNG fails.
  [[nodiscard]] static Result<TokenKey> Create(const std::string& path);

  // Reads the key file at `path` (a symlink is followed; the checks apply to the
  // file it names). Errors: NotFound if it does not exist; PermissionDenied if it
  // is group- or other-accessible (the message says to chmod 600 it);
  // FailedPrecondition if it is not a regular file; Corruption if its size,
  // header or hex digits are wrong; IOError if it cannot be read. Messages name
  // the path, never the contents.
  [[nodiscard]] static Result<TokenKey> Load(const std::string& path);

  // A key from raw bytes, of any length (keys longer than 64 bytes are hashed
  // first, as RFC 2104 says). For tests (RFC 4231 vectors) and tools; a real
  // instance key comes from Create or Load and is kKeyBytes long.
  static TokenKey FromBytes(std::span<const std::uint8_t> key);

  TokenKey(TokenKey&& other) noexcept;
  TokenKey& operator=(TokenKey&& other) noexcept;
  TokenKey(const TokenKey&) = delete;
  TokenKey& operator=(const TokenKey&) = delete;
  ~TokenKey();  // wipes the key material

  // HMAC-SHA256(key, token). REQUIRES: *this was not moved from.
  TokenDigest Digest(std::string_view token) const;

  // The first 8 bytes, big-endian, of HMAC-SHA256(key, "patledger key
  // fingerprint") (LedgerInitialized.key_fingerprint): names the key without
  // revealing it.
  std::uint64_t Fingerprint() const { return fingerprint_; }

 private:
  struct Pads;  // the precomputed SHA-256 states; defined in token_key.cc
  explicit TokenKey(std::span<const std::uint8_t> key);

  std::unique_ptr<Pads> pads_;  // null only when moved from
  std::uint64_t fingerprint_ = 0;
};

}  // namespace patledger::service

#endif  // PATLEDGER_SERVICE_TOKEN_KEY_H_
