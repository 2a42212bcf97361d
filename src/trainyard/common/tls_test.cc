#include "trainyard/common/tls.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <filesystem>

#include "trainyard/common/fs.h"
#include "trainyard/common/util.h"

namespace trainyard {
namespace {

namespace fs = std::filesystem;

TEST(TlsTest, SelfSignedIdentityCoversItsNamesAndPinsItsKey) {
  auto made = MakeSelfSignedIdentity({"192.0.2.7", "fd00::7", "node-1.example"}, "trainyard t");
  ASSERT_TRUE(made.ok()) << made.status().ToString();
  EXPECT_TRUE(CheckIdentity(*made, "made").ok());
  EXPECT_TRUE(CertificateCovers(made->certificate_pem, {"192.0.2.7"}));
  EXPECT_TRUE(CertificateCovers(made->certificate_pem, {"fd00::7", "node-1.example"}));
  EXPECT_FALSE(CertificateCovers(made->certificate_pem, {"192.0.2.8"}));
  EXPECT_FALSE(CertificateCovers(made->certificate_pem, {"node-2.example"}));
  EXPECT_FALSE(CertificateCovers("not a certificate", {"192.0.2.7"}));

  auto pin = PublicKeyPin(made->certificate_pem);
  ASSERT_TRUE(pin.ok()) << pin.status().ToString();
  EXPECT_TRUE(StartsWith(*pin, "sha256//")) << *pin;
  EXPECT_TRUE(IsPublicKeyPin(*pin));
  // Each identity has a key of its own.
  auto other = MakeSelfSignedIdentity({"192.0.2.7"}, "trainyard t");
  ASSERT_TRUE(other.ok());
  EXPECT_NE(*PublicKeyPin(other->certificate_pem), *pin);
  // A key of another identity does not go with this certificate.
  TlsIdentity mixed{made->certificate_pem, other->private_key_pem};
  Status st = CheckIdentity(mixed, "mixed.pem");
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("mixed.pem"), std::string::npos) << st.ToString();
}

TEST(TlsTest, BadNamesAndPinsAreRefused) {
  EXPECT_EQ(MakeSelfSignedIdentity({}, "t").status().code(), StatusCode::kInvalidArgument);
  // A name that could smuggle another subjectAltName entry in.
  EXPECT_EQ(MakeSelfSignedIdentity({"a.example,DNS:evil.example"}, "t").status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_TRUE(IsCertificateName("fd00::7"));
  EXPECT_TRUE(IsCertificateName("node-1.example"));
  EXPECT_FALSE(IsCertificateName("node_1"));
  EXPECT_FALSE(IsCertificateName(""));
  EXPECT_FALSE(IsPublicKeyPin("sha256//abc"));
  EXPECT_FALSE(IsPublicKeyPin("47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="));
  EXPECT_TRUE(IsPublicKeyPin("sha256//47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="));
  EXPECT_FALSE(PublicKeyPin("-----BEGIN CERTIFICATE-----\nxx\n").ok());
}

TEST(TlsTest, WorkspaceIdentityIsKeptPrivateAndRemadeForNewNames) {
  const fs::path dir = fs::temp_directory_path() / ("tls-" + RandomHex(4)) / "tls";
  bool replaced = true;
  auto first = LoadOrMakeWorkspaceIdentity(dir, {"192.0.2.7"}, "t", &replaced);
  ASSERT_TRUE(first.ok()) << first.status().ToString();
  EXPECT_FALSE(replaced);
  struct stat st {};
  ASSERT_EQ(::stat((dir / "server.key").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  ASSERT_EQ(::stat(dir.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700u);

  // The same names: the same identity, so a pin clients hold stays valid across restarts.
  auto again = LoadOrMakeWorkspaceIdentity(dir, {"192.0.2.7"}, "t", &replaced);
  ASSERT_TRUE(again.ok());
  EXPECT_FALSE(replaced);
  EXPECT_EQ(*PublicKeyPin(again->certificate_pem), *PublicKeyPin(first->certificate_pem));

  // Another address: a new certificate covering it, with the same key, so the same pin.
  auto moved = LoadOrMakeWorkspaceIdentity(dir, {"192.0.2.9"}, "t", &replaced);
  ASSERT_TRUE(moved.ok());
  EXPECT_FALSE(replaced);
  EXPECT_TRUE(CertificateCovers(moved->certificate_pem, {"192.0.2.9"}));
  EXPECT_NE(moved->certificate_pem, first->certificate_pem);
  EXPECT_EQ(*PublicKeyPin(moved->certificate_pem), *PublicKeyPin(first->certificate_pem));

  // A key others can read is refused, naming it.
  ASSERT_EQ(::chmod((dir / "server.key").c_str(), 0644), 0);
  auto loose = LoadOrMakeWorkspaceIdentity(dir, {"192.0.2.9"}, "t", &replaced);
  EXPECT_EQ(loose.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(loose.status().message().find("server.key"), std::string::npos);
  // A key that does not parse: a new key, and the caller is told the pin changed.
  ASSERT_TRUE(WriteFileAtomic(dir / "server.key", "garbage", 0600).ok());
  auto fresh = LoadOrMakeWorkspaceIdentity(dir, {"192.0.2.9"}, "t", &replaced);
  ASSERT_TRUE(fresh.ok()) << fresh.status().ToString();
  EXPECT_TRUE(replaced);
  EXPECT_NE(*PublicKeyPin(fresh->certificate_pem), *PublicKeyPin(first->certificate_pem));
  (void)RemoveTree(dir.parent_path());
}

}  // namespace
}  // namespace trainyard
