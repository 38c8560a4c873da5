// Keystone v3 authentication against a real Keystone and a Glance that
// trusts it (tools/peers/start-keystone): logging in with a password or an
// application credential, refusals that keep secrets out of messages, the
// catalog's image endpoints, and token renewal.
#include <catch2/catch.hpp>
#include <fstream>
#include <future>
#include <map>
#include <nlohmann/json.hpp>
#include <random>

#include "assertions.h"
#include "kiln/glance/client.h"
#include "kiln/glance/keystone.h"
#include "kiln/util/subprocess.h"
#include "scratch.h"

namespace fs = std::filesystem;
using kiln::ErrorCode;
using kiln::glance::GlanceClient;
using kiln::glance::KeystoneCredentials;
using kiln::glance::KeystoneTokenSource;

namespace {

// A value from KILN_KEYSTONE_ENV; fails the test loudly when the peers are not running.
std::string peer(const std::string& key) {
  static const std::map<std::string, std::string> values = [] {
    auto read = kiln::test::read_env_file(KILN_KEYSTONE_ENV);
    if (!read) {
      FAIL("Keystone is not running: " KILN_KEYSTONE_ENV
           " is missing (the 'keystone: start' test must run first; its output says what failed)");
    }
    return *read;
  }();
  auto it = values.find(key);
  if (it == values.end()) FAIL(KILN_KEYSTONE_ENV " has no " << key);
  return it->second;
}

KeystoneCredentials admin_password() {
  KeystoneCredentials credentials;
  credentials.auth_url = kiln::http::parse_url(peer("KEYSTONE_URL"));
  credentials.username = peer("KEYSTONE_ADMIN_USER");
  credentials.password = peer("KEYSTONE_ADMIN_PASSWORD");
  credentials.project_name = peer("KEYSTONE_ADMIN_PROJECT");
  return credentials;
}

KeystoneCredentials application_credential() {
  KeystoneCredentials credentials;
  credentials.auth_url = kiln::http::parse_url(peer("KEYSTONE_URL") + "/v3");  // as nova.conf usually has it
  credentials.auth_type = "v3applicationcredential";
  credentials.application_credential_id = peer("KEYSTONE_APP_CRED_ID");
  credentials.application_credential_secret = peer("KEYSTONE_APP_CRED_SECRET");
  return credentials;
}

GlanceClient glance_behind_keystone(std::shared_ptr<kiln::glance::TokenSource> tokens) {
  return GlanceClient({kiln::http::parse_url(peer("KEYSTONE_GLANCE_URL"))}, {}, {}, std::move(tokens));
}

std::string curl(std::vector<std::string> args) {
  std::vector<std::string> argv = {"curl", "-sS", "--fail-with-body"};
  argv.insert(argv.end(), args.begin(), args.end());
  auto result = kiln::run({argv});
  INFO(kiln::describe(argv) << "\n" << result.out << result.err);
  REQUIRE(result.exit_code == 0);
  return result.out;
}

// 3 MiB of random bytes: more than one chunk of a streamed download.
std::string random_bytes() {
  std::mt19937_64 generator(std::random_device{}());
  std::string bytes(3 * 1024 * 1024, '\0');
  for (char& byte : bytes) byte = static_cast<char>(generator());
  return bytes;
}

// Creates a raw image holding `content` in the Glance behind Keystone, as
// an operator would with curl and a token; returns its id.
std::string upload_image(const std::string& token, const std::string& name, const std::string& content) {
  kiln::test::ScratchDir scratch;
  kiln::test::write_text(scratch / "image.raw", content);
  std::string glance = peer("KEYSTONE_GLANCE_URL");
  nlohmann::json request = {{"name", name}, {"disk_format", "raw"}, {"container_format", "bare"}};
  auto created = nlohmann::json::parse(curl({"-X", "POST", glance + "/v2/images", "-H", "X-Auth-Token: " + token,
                                             "-H", "Content-Type: application/json", "-d", request.dump()}));
  std::string id = created["id"];
  curl({"-X", "PUT", glance + "/v2/images/" + id + "/file", "-H", "X-Auth-Token: " + token, "-H",
        "Content-Type: application/octet-stream", "--data-binary", "@" + (scratch / "image.raw").string()});
  return id;
}

std::string download(const GlanceClient& glance, const std::string& image_id) {
  std::string bytes;
  glance.download(image_id, 0, [&](std::span<const char> data) { bytes.append(data.data(), data.size()); });
  return bytes;
}

std::vector<std::string> as_strings(const std::vector<kiln::http::Url>& urls) {
  std::vector<std::string> strings;
  for (const auto& url : urls) strings.push_back(url.to_string());
  return strings;
}

}  // namespace

TEST_CASE("Glance behind Keystone refuses kiln without a token") {
  auto tokens = std::make_shared<KeystoneTokenSource>(admin_password());
  std::string image_id = upload_image(tokens->token(), "needs-a-token", "some bytes");
  GlanceClient anonymous = glance_behind_keystone(nullptr);

  REQUIRE_KILN_ERROR_MENTIONS(anonymous.get_image(image_id), ErrorCode::kGlanceError, "HTTP 401");
  REQUIRE_KILN_ERROR_MENTIONS(anonymous.get_image(image_id), ErrorCode::kGlanceError, "Unauthorized");
  REQUIRE_KILN_ERROR_MENTIONS(download(anonymous, image_id), ErrorCode::kGlanceError, "HTTP 401");
}

TEST_CASE("a password login gets a token with which kiln reads and downloads an image") {
  auto tokens = std::make_shared<KeystoneTokenSource>(admin_password());
  std::string content = random_bytes();
  std::string image_id = upload_image(tokens->token(), "password-login", content);
  GlanceClient glance = glance_behind_keystone(tokens);

  auto record = glance.get_image(image_id);
  REQUIRE(record.status == "active");
  REQUIRE(record.size == content.size());
  REQUIRE(download(glance, image_id) == content);
}

TEST_CASE("an application credential logs in and kiln reads and downloads an image") {
  auto tokens = std::make_shared<KeystoneTokenSource>(application_credential());
  std::string content = random_bytes();
  std::string image_id = upload_image(tokens->token(), "application-credential", content);
  GlanceClient glance = glance_behind_keystone(tokens);

  REQUIRE(glance.get_image(image_id).status == "active");
  REQUIRE(download(glance, image_id) == content);
}

TEST_CASE("a wrong password is an invalid_argument error naming the user and Keystone, not the password") {
  KeystoneCredentials credentials = admin_password();
  credentials.password = "wrong-" + kiln::test::random_uuid();
  auto tokens = std::make_shared<KeystoneTokenSource>(credentials);

  try {
    tokens->token();
    FAIL("Keystone accepted a wrong password");
  } catch (const kiln::Error& error) {
    std::string message = error.what();
    INFO(message);
    REQUIRE(error.code() == ErrorCode::kInvalidArgument);
    REQUIRE(message.find("refused user 'admin'") != std::string::npos);
    REQUIRE(message.find(peer("KEYSTONE_URL")) != std::string::npos);
    REQUIRE(message.find(credentials.password) == std::string::npos);
  }
  // Through Glance the same error reaches the caller, before any request to Glance.
  GlanceClient glance = glance_behind_keystone(tokens);
  REQUIRE_KILN_ERROR_MENTIONS(glance.get_image(kiln::test::random_uuid()), ErrorCode::kInvalidArgument,
                              "refused user 'admin'");
}

TEST_CASE("a wrong application credential secret is an invalid_argument error without the secret") {
  KeystoneCredentials credentials = application_credential();
  credentials.application_credential_secret = "wrong-" + kiln::test::random_uuid();
  KeystoneTokenSource tokens(credentials);

  try {
    tokens.token();
    FAIL("Keystone accepted a wrong secret");
  } catch (const kiln::Error& error) {
    std::string message = error.what();
    INFO(message);
    REQUIRE(error.code() == ErrorCode::kInvalidArgument);
    REQUIRE(message.find("application credential " + credentials.application_credential_id) != std::string::npos);
    REQUIRE(message.find(credentials.application_credential_secret) == std::string::npos);
  }
}

TEST_CASE("the catalog's image endpoints are the Glance behind Keystone, by interface and region") {
  std::string glance = peer("KEYSTONE_GLANCE_URL");
  KeystoneCredentials credentials = admin_password();
  credentials.region_name = peer("KEYSTONE_REGION");
  auto tokens = std::make_shared<KeystoneTokenSource>(credentials);
  REQUIRE(as_strings(tokens->image_endpoints()) == std::vector<std::string>{glance});

  credentials.interface = "internal";
  REQUIRE(as_strings(KeystoneTokenSource(credentials).image_endpoints()) ==
          std::vector<std::string>{peer("KEYSTONE_GLANCE_INTERNAL_URL")});

  // Every region: RegionTwo lists the same Glance with /v2, which kiln drops.
  credentials.interface = "public";
  credentials.region_name = "";
  REQUIRE(peer("KEYSTONE_GLANCE_REGION_TWO_URL") == glance + "/v2");
  REQUIRE(as_strings(KeystoneTokenSource(credentials).image_endpoints()) == std::vector<std::string>{glance, glance});

  // What the endpoints are for: a Glance client that needs no api_servers.
  std::string content = random_bytes();
  std::string image_id = upload_image(tokens->token(), "from-the-catalog", content);
  GlanceClient from_catalog(tokens->image_endpoints(), {}, {}, tokens);
  REQUIRE(download(from_catalog, image_id) == content);
}

TEST_CASE("a token is kept until it expires within the renewal margin or is invalidated") {
  KeystoneTokenSource cached(admin_password());
  std::string first = cached.token();
  REQUIRE(cached.token() == first);
  cached.invalidate();
  std::string second = cached.token();
  REQUIRE(second != first);
  REQUIRE(cached.token() == second);

  // Keystone's tokens live an hour: with a two-hour margin each use logs in again.
  KeystoneTokenSource always_expiring(application_credential(), std::chrono::hours(2));
  std::string a = always_expiring.token();
  std::string b = always_expiring.token();
  std::string c = always_expiring.token();
  REQUIRE(a != b);
  REQUIRE(b != c);
  REQUIRE(a != c);
}

TEST_CASE("threads asking for a token at once share one login") {
  KeystoneTokenSource tokens(admin_password());
  std::vector<std::future<std::string>> threads;
  for (int i = 0; i < 8; ++i) {
    threads.push_back(std::async(std::launch::async, [&] { return tokens.token(); }));
  }
  std::string first = threads.front().get();
  for (std::size_t i = 1; i < threads.size(); ++i) REQUIRE(threads[i].get() == first);
}
