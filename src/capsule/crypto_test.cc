// Crypto wrappers: known answers (BLAKE2b from RFC 7693, the Ed25519 key of RFC 8032 test 1 and a
// signature over domain || BLAKE2b-512 computed independently with Python's `cryptography`), round
// trips, and every kind of tampering rejected with outputs zeroed.
#include "capsule/crypto.h"

#include <gtest/gtest.h>

#include <cstring>

#include "base/bytes.h"
#include "base/sensitive_memory.h"

namespace mlcapsule::capsule {
namespace {

class CryptoTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_TRUE(InitCrypto().ok()); }
};

template <size_t N>
std::array<uint8_t, N> FromHexOrDie(std::string_view hex) {
  std::array<uint8_t, N> out{};
  Status status = FromHex(hex, out, "test vector");
  EXPECT_TRUE(status.ok()) << status.ToString();
  return out;
}

std::vector<uint8_t> Vec(std::string_view s) { return {s.begin(), s.end()}; }

TEST_F(CryptoTest, Blake2bKnownAnswers) {
  EXPECT_EQ(ToHex(Hash64({AsBytes("abc")})),
            "ba80a53f981c4d0d6a2797b69f12f6e94c212f14685ac4b74b12bb6fdbffa2d1"
            "7d87c5392aab792dc252d5de4533cc9518d38aa8dbf1925ab92386edd4009923");
  EXPECT_EQ(ToHex(Hash({AsBytes("abc")})),
            "bddd813c634239723171ef3fee98579b94964e3bb1cb3e427262c8c068d52319");
  EXPECT_EQ(ToHex(Hash({})), "0e5751c026e543b2e8ab2eb06099daa1d1e5df47778f7787faab45cdf12fe3a8");
}

TEST_F(CryptoTest, HashOfPartsIsHashOfConcatenation) {
  EXPECT_EQ(Hash({AsBytes("ab"), AsBytes(""), AsBytes("c")}), Hash({AsBytes("abc")}));
  EXPECT_EQ(Hash64({AsBytes("a"), AsBytes("bc")}), Hash64({AsBytes("abc")}));
  EXPECT_NE(Hash({AsBytes("abd")}), Hash({AsBytes("abc")}));

  std::vector<uint8_t> data(100000);
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<uint8_t>(i * 31 + 7);
  Hasher64 hasher;
  for (size_t offset = 0; offset < data.size(); offset += 777)
    hasher.Update(std::span(data).subspan(offset, std::min<size_t>(777, data.size() - offset)));
  EXPECT_EQ(hasher.Final(), Hash64({data}));
}

TEST_F(CryptoTest, Ed25519KnownAnswer) {
  // RFC 8032, section 7.1, test 1: seed and public key.
  auto seed = FromHexOrDie<32>("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60");
  auto public_key =
      FromHexOrDie<32>("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a");
  std::vector<uint8_t> secret(seed.begin(), seed.end());
  secret.insert(secret.end(), public_key.begin(), public_key.end());
  Result<SigningKeyPair> pair = SigningKeyPairFromSecret(secret);
  ASSERT_TRUE(pair.ok()) << pair.status().ToString();
  EXPECT_EQ(pair->public_key, public_key);

  // Ed25519("mlcapsule/v1/lease" || BLAKE2b-512("hello world")), computed with Python's
  // cryptography package: pins the construction, not just self-consistency.
  Signature signature =
      Sign(pair->secret, kLeaseSignatureDomain, {AsBytes("hello "), AsBytes("world")});
  EXPECT_EQ(ToHex(signature),
            "926dfe4a991ad881b73327b1a81e38677c508ec56474d8a02a8fe5be58ba212b"
            "7d404c05108b65f0553620b932a8ee245d8316bf0e5ff1e0c060db4bed22f007");
  EXPECT_TRUE(Verify(public_key, kLeaseSignatureDomain, {AsBytes("hello world")}, signature).ok());
}

TEST_F(CryptoTest, SigningKeyPairFromSecretRejectsBadKeys) {
  SigningKeyPair pair = GenerateSigningKeyPair();
  EXPECT_FALSE(SigningKeyPairFromSecret(pair.secret.span().first(63)).ok());
  std::vector<uint8_t> secret(pair.secret.span().begin(), pair.secret.span().end());
  secret[40] ^= 1;  // the public half no longer matches the seed
  Result<SigningKeyPair> bad = SigningKeyPairFromSecret(secret);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("does not match"), std::string::npos);
  Result<SigningKeyPair> good = SigningKeyPairFromSecret(pair.secret.span());
  ASSERT_TRUE(good.ok());
  EXPECT_EQ(good->public_key, pair.public_key);
}

TEST_F(CryptoTest, SignaturesAreBoundToKeyDomainAndMessage) {
  SigningKeyPair pair = GenerateSigningKeyPair();
  SigningKeyPair other = GenerateSigningKeyPair();
  std::vector<uint8_t> message = Vec("a lease body");
  Signature signature = Sign(pair.secret, kLeaseSignatureDomain, {message});
  EXPECT_TRUE(Verify(pair.public_key, kLeaseSignatureDomain, {message}, signature).ok());
  // Same digest through the digest API.
  EXPECT_TRUE(
      VerifyDigest(pair.public_key, kLeaseSignatureDomain, Hash64({message}), signature).ok());
  EXPECT_EQ(SignDigest(pair.secret, kLeaseSignatureDomain, Hash64({message})), signature);

  Status wrong_domain = Verify(pair.public_key, kUsageReportSignatureDomain, {message}, signature);
  EXPECT_FALSE(wrong_domain.ok());
  EXPECT_EQ(wrong_domain.code(), StatusCode::kPermissionDenied);
  EXPECT_FALSE(Verify(pair.public_key, kCapsuleSignatureDomain, {message}, signature).ok());
  EXPECT_FALSE(Verify(other.public_key, kLeaseSignatureDomain, {message}, signature).ok());
  for (size_t i = 0; i < message.size(); ++i) {
    std::vector<uint8_t> changed = message;
    changed[i] ^= 0x20;
    EXPECT_FALSE(Verify(pair.public_key, kLeaseSignatureDomain, {changed}, signature).ok()) << i;
  }
  for (size_t i = 0; i < signature.size(); ++i) {
    for (uint8_t bit : {0x01, 0x80}) {
      Signature changed = signature;
      changed[i] ^= bit;
      EXPECT_FALSE(Verify(pair.public_key, kLeaseSignatureDomain, {message}, changed).ok()) << i;
    }
  }
}

TEST_F(CryptoTest, SealedBoxRoundTripAndTampering) {
  BoxKeyPair recipient = GenerateBoxKeyPair();
  BoxKeyPair other = GenerateBoxKeyPair();
  SecretBytes key = RandomSecret(kSymmetricKeyBytes);
  std::vector<uint8_t> sealed = SealTo(recipient.public_key, key.span());
  ASSERT_EQ(sealed.size(), kSymmetricKeyBytes + kSealedBoxOverhead);

  Result<SecretBytes> opened = OpenSealed(recipient, sealed);
  ASSERT_TRUE(opened.ok()) << opened.status().ToString();
  EXPECT_TRUE(ConstantTimeEqual(opened->span(), key.span()));

  EXPECT_FALSE(OpenSealed(other, sealed).ok());
  EXPECT_FALSE(OpenSealed(recipient, std::span(sealed).first(kSealedBoxOverhead - 1)).ok());
  for (size_t i = 0; i < sealed.size(); ++i) {
    std::vector<uint8_t> changed = sealed;
    changed[i] ^= 0x04;
    EXPECT_FALSE(OpenSealed(recipient, changed).ok()) << i;
  }
  // Sealing is randomized: two seals of the same key differ.
  EXPECT_NE(SealTo(recipient.public_key, key.span()), sealed);
}

TEST_F(CryptoTest, AeadRoundTripAndTampering) {
  SecretBytes key = RandomSecret(kSymmetricKeyBytes);
  std::vector<uint8_t> plaintext = Vec("sealed core state: counters, lease, chain head");
  std::vector<uint8_t> ad = Vec("capsule id");
  std::vector<uint8_t> sealed = AeadEncrypt(key, plaintext, ad);
  ASSERT_EQ(sealed.size(), kAeadNonceBytes + plaintext.size() + kAeadTagBytes);

  Result<SecretBytes> opened = AeadDecrypt(key, sealed, ad, "sealed state");
  ASSERT_TRUE(opened.ok()) << opened.status().ToString();
  EXPECT_TRUE(ConstantTimeEqual(opened->span(), plaintext));

  Result<SecretBytes> wrong_ad = AeadDecrypt(key, sealed, Vec("another capsule"), "sealed state");
  ASSERT_FALSE(wrong_ad.ok());
  EXPECT_NE(wrong_ad.status().message().find("sealed state"), std::string::npos);
  EXPECT_FALSE(AeadDecrypt(RandomSecret(kSymmetricKeyBytes), sealed, ad, "x").ok());
  EXPECT_FALSE(AeadDecrypt(RandomSecret(16), sealed, ad, "x").ok());
  EXPECT_FALSE(
      AeadDecrypt(key, std::span(sealed).first(kAeadNonceBytes + kAeadTagBytes - 1), ad, "x").ok());
  for (size_t i = 0; i < sealed.size(); ++i) {
    std::vector<uint8_t> changed = sealed;
    changed[i] ^= 0x10;
    EXPECT_FALSE(AeadDecrypt(key, changed, ad, "x").ok()) << i;
  }
  std::vector<uint8_t> empty = AeadEncrypt(key, {}, ad);
  Result<SecretBytes> opened_empty = AeadDecrypt(key, empty, ad, "empty");
  ASSERT_TRUE(opened_empty.ok());
  EXPECT_TRUE(opened_empty->empty());
}

TEST_F(CryptoTest, HexRoundTripAndErrors) {
  std::vector<uint8_t> bytes = {0x00, 0x01, 0xab, 0xff, 0x7f};
  EXPECT_EQ(ToHex(bytes), "0001abff7f");
  std::array<uint8_t, 5> out{};
  ASSERT_TRUE(FromHex("0001ABff7f", out, "value").ok());
  EXPECT_TRUE(std::equal(out.begin(), out.end(), bytes.begin()));

  std::array<uint8_t, 5> bad{};
  Status odd = FromHex("0001abff7", bad, "the key");
  ASSERT_FALSE(odd.ok());
  EXPECT_NE(odd.message().find("the key"), std::string::npos);
  bad.fill(0x55);
  EXPECT_FALSE(FromHex("0001abff7g", bad, "value").ok());
  EXPECT_EQ(bad, (std::array<uint8_t, 5>{}));  // zeroed on failure
  EXPECT_FALSE(FromHex("0001abff7f00", bad, "value").ok());
  EXPECT_FALSE(FromHex("00 1abff7f", bad, "value").ok());
  EXPECT_EQ(ToHex({}), "");
}

TEST_F(CryptoTest, ConstantTimeEqual) {
  EXPECT_TRUE(ConstantTimeEqual(AsBytes("abc"), AsBytes("abc")));
  EXPECT_FALSE(ConstantTimeEqual(AsBytes("abc"), AsBytes("abd")));
  EXPECT_FALSE(ConstantTimeEqual(AsBytes("abc"), AsBytes("ab")));
  EXPECT_TRUE(ConstantTimeEqual({}, {}));
}

TEST_F(CryptoTest, SecretBytesBehaviour) {
  SecretBytes zero(16);
  ASSERT_EQ(zero.size(), 16u);
  for (uint8_t b : zero.span()) EXPECT_EQ(b, 0);

  const uint8_t data[] = {1, 2, 3, 4, 5, 6, 7, 8};
  SecretBytes secret(data, sizeof(data));
  SecretBytes clone = secret.Clone();
  clone.data()[0] = 9;
  EXPECT_EQ(secret.data()[0], 1);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(secret.data()) % 64, 0u);

  SecretBytes moved = std::move(secret);
  EXPECT_TRUE(secret.empty());  // NOLINT(bugprone-use-after-move): documented moved-from state
  EXPECT_EQ(secret.data(), nullptr);
  ASSERT_EQ(moved.size(), 8u);
  EXPECT_EQ(moved.data()[7], 8);

  moved.Truncate(3);
  EXPECT_EQ(moved.size(), 3u);
  EXPECT_EQ(moved.data()[2], 3);
  EXPECT_EQ(moved.data()[3], 0);  // wiped (still inside the allocation)
  moved.Truncate(10);             // never grows
  EXPECT_EQ(moved.size(), 3u);

  moved = std::move(clone);
  EXPECT_EQ(moved.size(), 8u);
  EXPECT_EQ(moved.data()[0], 9);

  SecretBytes empty(0);
  EXPECT_TRUE(empty.empty());
}

// Secrets go through the sensitive-memory provider (memfd_secret inside the software TEE).
size_t g_allocations = 0;
size_t g_releases = 0;
void* CountingAllocate(size_t bytes) {
  ++g_allocations;
  return std::aligned_alloc(64, (bytes + 63) / 64 * 64);
}
void CountingRelease(void* pointer, size_t) {
  ++g_releases;
  std::free(pointer);
}
constexpr SensitiveMemoryProvider kCounting{CountingAllocate, CountingRelease, "counting"};

TEST_F(CryptoTest, SecretsUseSensitiveMemory) {
  SetSensitiveMemoryProvider(&kCounting);
  g_allocations = g_releases = 0;
  {
    SecretBytes key = RandomSecret(kSymmetricKeyBytes);
    SigningKeyPair pair = GenerateSigningKeyPair();
    EXPECT_EQ(g_allocations, 2u);
  }
  EXPECT_EQ(g_releases, 2u);
  SetSensitiveMemoryProvider(nullptr);
}

}  // namespace
}  // namespace mlcapsule::capsule
