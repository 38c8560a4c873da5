// kilnctl with a kilnd running on the configured socket: boot, delete,
// cache fetch and cache prune go through the agent (its operations and
// metrics see them), errors come back with the agent's code, read-only
// commands and --direct work on the host itself, and every command that has
// both paths prints the same JSON either way.
#include <signal.h>

#include <catch2/catch.hpp>
#include <functional>
#include <map>
#include <regex>
#include <set>

#include "kiln/cache/base_info.h"
#include "kiln/cache/image_cache.h"
#include "kiln/util/fs.h"
#include "kiln/util/subprocess.h"
#include "kiln/virt/connection.h"
#include "kilnd_process.h"
#include "peers.h"
#include "scratch.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

struct AgentHost {
  kiln::test::ScratchDir scratch;
  fs::path instances = scratch / "instances";
  fs::path socket = scratch / "kiln.sock";
  fs::path config = kiln::test::write_kilnd_config(scratch.path(), instances, kiln::test::peers().glance_url,
                                                   kiln::test::peers().libvirt_uri, socket);
};

struct Outcome {
  int exit_code;
  json output;
  std::string err;
};

// kilnctl with only --config: the socket, Glance and libvirt come from the file.
Outcome kilnctl_with_config(const fs::path& config, std::vector<std::string> args) {
  std::vector<std::string> argv = {KILN_KILNCTL, "--json", "--config", config.string()};
  argv.insert(argv.end(), args.begin(), args.end());
  auto result = kiln::run({argv});
  INFO(result.out << result.err);
  auto output = json::parse(result.out, nullptr, false);
  REQUIRE_FALSE(output.is_discarded());
  return {result.exit_code, output, result.err};
}

// A counter or gauge from kilnd's /metrics.
double metric(const kiln::test::KilndProcess& kilnd, const std::string& name) {
  auto reply = kilnd.client().call("GET", "/metrics");
  REQUIRE(reply.status == 200);
  std::string text = reply.body.is_string() ? reply.body.get<std::string>() : reply.body.dump();
  std::smatch match;
  REQUIRE(std::regex_search(text, match, std::regex("\n" + name + " ([0-9.e+]+)\n")));
  return std::stod(match[1]);
}

}  // namespace

TEST_CASE("kilnctl boots, deletes and pre-caches through a running kilnd, and --direct bypasses it") {
  AgentHost host;
  kiln::test::KilndProcess kilnd(host.config, host.socket);
  REQUIRE(kilnd.wait_ready());
  kiln::test::make_qcow2(host.scratch / "image.qcow2", "16M");
  std::string image_id = kiln::test::upload_image("through-kilnd", "qcow2", host.scratch / "image.qcow2");
  std::string uuid = kiln::test::random_uuid();

  auto booted = kilnctl_with_config(host.config, {"boot", "--image", image_id, "--uuid", uuid, "--vcpus", "1",
                                                  "--memory-mb", "64", "--root-gb", "1", "--swap-mb", "0"});
  REQUIRE(booted.exit_code == 0);
  REQUIRE(booted.output["domain"]["state"] == "running");
  REQUIRE(metric(kilnd, "kiln_boots_total") == 1);
  auto operations = kilnd.client().call("GET", "/v1/instances/" + uuid);
  REQUIRE(operations.status == 200);

  auto shown = kilnctl_with_config(host.config, {"instance", "show", uuid});
  REQUIRE(shown.exit_code == 0);
  REQUIRE(shown.output["domain"]["state"] == "running");

  auto refused = kilnctl_with_config(host.config, {"boot", "--image", kiln::test::random_uuid(), "--uuid",
                                                   kiln::test::random_uuid(), "--vcpus", "1", "--memory-mb", "64",
                                                   "--root-gb", "1", "--swap-mb", "0"});
  REQUIRE(refused.exit_code == 1);
  REQUIRE(refused.output["error"]["code"] == "image_not_found");

  auto deleted = kilnctl_with_config(host.config, {"delete", uuid});
  REQUIRE(deleted.exit_code == 0);
  REQUIRE_FALSE(fs::exists(host.instances / uuid));

  auto direct = kilnctl_with_config(host.config, {"--direct", "boot", "--image", image_id, "--uuid",
                                                  kiln::test::random_uuid(), "--vcpus", "1", "--memory-mb", "64",
                                                  "--root-gb", "1", "--swap-mb", "0", "--no-start"});
  REQUIRE(direct.exit_code == 0);
  REQUIRE(metric(kilnd, "kiln_boots_total") == 1);  // kilnd saw none of it
  REQUIRE(kilnctl_with_config(host.config, {"--direct", "delete", direct.output["uuid"]}).exit_code == 0);

  std::string other = kiln::test::upload_image("precached", "qcow2", host.scratch / "image.qcow2");
  auto cached = kilnctl_with_config(host.config, {"cache", "fetch", other});
  REQUIRE(cached.exit_code == 0);
  REQUIRE(fs::exists(host.instances / "_base" / kiln::cache::base_name_for(other)));
  REQUIRE(metric(kilnd, "kiln_downloaded_bytes_total") > 0);
  REQUIRE(kilnd.stop(SIGTERM) == 0);

  // With the agent gone (its socket left behind or not), kilnctl works directly.
  auto alone = kilnctl_with_config(host.config, {"cache", "ls"});
  REQUIRE(alone.exit_code == 0);
}

TEST_CASE("kilnctl pointed at another instances path or libvirt works directly, not through the kilnd on its socket") {
  AgentHost host;
  kiln::test::KilndProcess kilnd(host.config, host.socket);
  REQUIRE(kilnd.wait_ready());
  auto health = kilnd.client().call("GET", "/healthz");
  REQUIRE(health.status == 200);
  REQUIRE(health.body["instances_path"] == host.instances.string());
  REQUIRE(health.body["libvirt_uri"] == kiln::test::peers().libvirt_uri);
  kiln::test::make_qcow2(host.scratch / "image.qcow2", "16M");
  std::string image_id = kiln::test::upload_image("elsewhere", "qcow2", host.scratch / "image.qcow2");

  // Same socket and config, another instances path: the base lands there, kilnd sees nothing.
  fs::path elsewhere = host.scratch / "elsewhere";
  fs::create_directories(elsewhere);
  auto fetched = kilnctl_with_config(host.config, {"--instances-path", elsewhere.string(), "cache", "fetch", image_id});
  REQUIRE(fetched.exit_code == 0);
  REQUIRE(fs::exists(elsewhere / "_base" / kiln::cache::base_name_for(image_id)));
  REQUIRE_FALSE(fs::exists(host.instances / "_base" / kiln::cache::base_name_for(image_id)));
  REQUIRE(metric(kilnd, "kiln_downloaded_bytes_total") == 0);

  // Same instances path, another libvirt: a boot defines its domain there, not in kilnd's.
  std::string uuid = kiln::test::random_uuid();
  auto booted = kilnctl_with_config(host.config, {"--libvirt-uri", "test:///default", "boot", "--image", image_id,
                                                  "--uuid", uuid, "--vcpus", "1", "--memory-mb", "64", "--root-gb",
                                                  "1", "--swap-mb", "0", "--no-start"});
  REQUIRE(booted.exit_code == 0);
  REQUIRE(metric(kilnd, "kiln_boots_total") == 0);
  REQUIRE(kilnctl_with_config(host.config, {"--libvirt-uri", "test:///default", "delete", uuid}).exit_code == 0);

  // The same host: through kilnd (an image the direct boot did not cache already).
  std::string other = kiln::test::upload_image("here", "qcow2", host.scratch / "image.qcow2");
  REQUIRE(kilnctl_with_config(host.config, {"cache", "fetch", other}).exit_code == 0);
  REQUIRE(metric(kilnd, "kiln_downloaded_bytes_total") > 0);
  REQUIRE(kilnd.stop(SIGTERM) == 0);
}

TEST_CASE("kilnd measures the image against the flavor before it fetches a byte") {
  AgentHost host;
  kiln::test::KilndProcess kilnd(host.config, host.socket);
  REQUIRE(kilnd.wait_ready());
  kiln::test::make_qcow2(host.scratch / "small.qcow2", "16M");
  std::string needs_two = kiln::test::upload_image("min_disk 2", "qcow2", host.scratch / "small.qcow2");
  REQUIRE(kiln::test::patch_image(needs_two, {{"min_disk", 2}}).exit_code == 0);
  kiln::run_checked({{"qemu-img", "create", "-q", "-f", "qcow2", (host.scratch / "huge.qcow2").string(), "8T"}});
  std::string huge = kiln::test::upload_image("8 TiB virtual", "qcow2", host.scratch / "huge.qcow2");

  for (const auto& image_id : {needs_two, huge}) {
    INFO(kiln::test::image_record(image_id).dump());
    auto refused = kilnctl_with_config(host.config, {"boot", "--image", image_id, "--uuid", kiln::test::random_uuid(),
                                                     "--vcpus", "1", "--memory-mb", "64", "--root-gb", "1",
                                                     "--swap-mb", "0", "--no-start"});
    REQUIRE(refused.exit_code == 1);
    REQUIRE(refused.output["error"]["code"] == "flavor_disk_too_small");
    REQUIRE_FALSE(fs::exists(host.instances / "_base" / kiln::cache::base_name_for(image_id)));
  }
  REQUIRE(metric(kilnd, "kiln_downloaded_bytes_total") == 0);
}

// tests/hostile/make-images: every image of the corpus, registered in the real
// Glance with its disk_format, is refused on both boot paths with the
// manifest's code, and leaves no base, no instance directory and no domain.
TEST_CASE("every image of the hostile corpus is refused through kilnd and through kilnctl --direct") {
  AgentHost host;
  fs::path corpus = host.scratch / "corpus";
  kiln::run_checked({{KILN_SOURCE_DIR "/tests/hostile/make-images", corpus.string()}});
  json manifest = json::parse(kiln::read_file(corpus / "manifest.json"));
  REQUIRE(manifest["images"].size() >= 10);
  kiln::test::KilndProcess kilnd(host.config, host.socket);
  REQUIRE(kilnd.wait_ready());
  for (const auto& image : manifest["images"]) {
    std::string file = image["file"];
    INFO(file << ": " << image["description"].get<std::string>());
    std::string image_id = kiln::test::upload_image("hostile " + file, image["disk_format"], corpus / file);
    for (bool direct : {false, true}) {
      std::string uuid = kiln::test::random_uuid();
      std::vector<std::string> args = {"boot", "--image", image_id, "--uuid", uuid, "--vcpus", "1",
                                       "--memory-mb", "64", "--root-gb", "1", "--swap-mb", "0"};
      if (direct) args.push_back("--direct");
      auto outcome = kilnctl_with_config(host.config, args);
      INFO((direct ? "kilnctl --direct" : "through kilnd") << ": " << outcome.output.dump());
      REQUIRE(outcome.exit_code == 1);
      REQUIRE(outcome.output["error"]["code"] == image["expected_error"]);
      REQUIRE_FALSE(fs::exists(host.instances / uuid));
      REQUIRE_FALSE(kiln::virt::Connection(kiln::test::peers().libvirt_uri).lookup_by_uuid(uuid).has_value());
    }
    REQUIRE_FALSE(fs::exists(host.instances / "_base" / kiln::cache::base_name_for(image_id)));
  }
  REQUIRE(kilnd.stop(SIGTERM) == 0);
}

namespace {

// `text` with every occurrence of each key of `names` replaced by its value.
std::string renamed(std::string text, const std::map<std::string, std::string>& names) {
  for (const auto& [from, to] : names) {
    for (auto at = text.find(from); at != std::string::npos; at = text.find(from, at + to.size())) {
      text.replace(at, from.size(), to);
    }
  }
  return text;
}

// `output` of one path, with the other path's names (uuid, image id, base
// name) put in place of its own and the one field that honestly differs
// between two runs dropped: phases_ms (the timings of a cold fetch, top level
// or under "base"). Nothing else: an error's "step" is the same both ways
// (kiln/rpc/steps.h).
json comparable(const json& output, const std::map<std::string, std::string>& names) {
  json out = json::parse(renamed(output.dump(), names));
  if (out.is_object()) {
    out.erase("phases_ms");
    if (out.contains("base") && out["base"].is_object()) out["base"].erase("phases_ms");
  }
  return out;
}

// The exit code kilnctl gives the answer kilnd sent: 0 for a 2xx, 2 for a
// request refused with a pointer, 1 for any other error (kilnctl's main.cpp).
int exit_code_of(const kiln::rpc::AgentReply& reply) {
  if (reply.status >= 200 && reply.status < 300) return 0;
  return reply.body.contains("error") && reply.body["error"].contains("pointer") ? 2 : 1;
}

// An instance list scoped to what this test made: the shared libvirtd holds
// other tests' kiln domains meanwhile (ctest -j2), which come and go between
// two reads. Items are kept or dropped whole; no field is touched.
json only_ours(json output, const std::set<std::string>& uuids) {
  if (output.is_object() && output.contains("instances") && output["instances"].is_array()) {
    json kept = json::array();
    for (const auto& item : output["instances"]) {
      if (uuids.count(item.value("uuid", ""))) kept.push_back(item);
    }
    output["instances"] = kept;
  }
  return output;
}

void age_base(const fs::path& base, std::chrono::hours age) {
  auto info = kiln::cache::load_base_info(base);
  REQUIRE(info);
  info->last_used_at = kiln::cache::Clock::now() - age;
  kiln::cache::save_base_info(base, *info);
}

}  // namespace

// Every command that has both paths, on the same host state, compared whole:
// kilnctl direct and through kilnd (boot, delete, cache fetch, cache prune),
// and kilnctl against kilnd's answer to the same view (instance list,
// instance show, cache ls: kilnctl reads those itself, kilnd serves them as
// GET /v1/...). The JSON is the same but for the names of what each path
// made (another uuid, another upload of the same file under the same name:
// renamed, not dropped) and one named field, phases_ms (the timings of a
// cold fetch). A field on one path only fails it.
// One failing case per command too: the exit code (kilnd's status, mapped
// as kilnctl maps it) and the error envelope match.
TEST_CASE("kilnctl --json prints the same JSON directly and through kilnd for every command that has both") {
  AgentHost host;
  kiln::test::KilndProcess kilnd(host.config, host.socket);
  REQUIRE(kilnd.wait_ready());
  kiln::test::make_qcow2(host.scratch / "image.qcow2", "16M");
  std::string through_image = kiln::test::upload_image("parity", "qcow2", host.scratch / "image.qcow2");
  std::string direct_image = kiln::test::upload_image("parity", "qcow2", host.scratch / "image.qcow2");
  std::map<std::string, std::string> image_names = {
      {direct_image, through_image},
      {kiln::cache::base_name_for(direct_image), kiln::cache::base_name_for(through_image)}};
  auto both = [&](std::vector<std::string> through_args, std::vector<std::string> direct_args,
                  const std::map<std::string, std::string>& names) {
    auto through = kilnctl_with_config(host.config, through_args);
    direct_args.insert(direct_args.begin(), "--direct");
    auto direct = kilnctl_with_config(host.config, direct_args);
    INFO("through kilnd: " << through.output.dump(2) << "\ndirect: " << direct.output.dump(2));
    REQUIRE(through.exit_code == direct.exit_code);
    REQUIRE(comparable(direct.output, names) == comparable(through.output, {}));
    return through;
  };
  // kilnctl's view (with kilnd running, and --direct) against kilnd's GET of it.
  auto same_as_kilnd = [&](std::vector<std::string> args, const std::string& target,
                           const std::set<std::string>& uuids) {
    auto reply = kilnd.client().call("GET", target);
    auto beside = kilnctl_with_config(host.config, args);
    args.insert(args.begin(), "--direct");
    auto direct = kilnctl_with_config(host.config, args);
    INFO("kilnd GET " << target << ": " << reply.status << " " << reply.body.dump(2) << "\nkilnctl: "
                      << beside.output.dump(2) << "\nkilnctl --direct: " << direct.output.dump(2));
    REQUIRE(direct.exit_code == exit_code_of(reply));
    REQUIRE(beside.exit_code == direct.exit_code);
    REQUIRE(only_ours(direct.output, uuids) == only_ours(reply.body, uuids));
    REQUIRE(only_ours(beside.output, uuids) == only_ours(reply.body, uuids));
    return reply;
  };

  SECTION("cache fetch, cold then warm") {
    auto cold = both({"cache", "fetch", through_image}, {"cache", "fetch", direct_image}, image_names);
    REQUIRE(cold.exit_code == 0);
    REQUIRE(cold.output["downloaded_bytes"].get<std::uint64_t>() > 0);
    REQUIRE(metric(kilnd, "kiln_downloaded_bytes_total") > 0);
    auto warm = both({"cache", "fetch", through_image}, {"cache", "fetch", direct_image}, image_names);
    REQUIRE(warm.output["downloaded_bytes"] == 0);
  }

  SECTION("boot and delete") {
    std::string through_uuid = kiln::test::random_uuid();
    std::string direct_uuid = kiln::test::random_uuid();
    auto names = image_names;
    names[direct_uuid] = through_uuid;
    auto boot = [&](const std::string& image, const std::string& uuid) {
      return std::vector<std::string>{"boot", "--image", image, "--uuid", uuid, "--vcpus", "1", "--memory-mb",
                                      "64", "--root-gb", "1", "--swap-mb", "0", "--no-start"};
    };
    auto booted = both(boot(through_image, through_uuid), boot(direct_image, direct_uuid), names);
    REQUIRE(booted.exit_code == 0);
    REQUIRE(booted.output["domain"]["state"] == "shut off");
    REQUIRE(metric(kilnd, "kiln_boots_total") == 1);
    auto deleted = both({"delete", through_uuid}, {"delete", direct_uuid}, names);
    REQUIRE(deleted.exit_code == 0);
    REQUIRE(deleted.output == json{{"uuid", through_uuid}, {"domain_found", true}, {"directory_found", true}});
    // Nothing left to delete: the same answer both ways.
    REQUIRE(both({"delete", through_uuid}, {"delete", direct_uuid}, names).output["directory_found"] == false);
  }

  SECTION("a boot of an image Glance does not have") {
    std::string missing = kiln::test::random_uuid();
    std::string uuid = kiln::test::random_uuid();
    std::vector<std::string> args = {"boot", "--image", missing, "--uuid", uuid, "--vcpus", "1",
                                     "--memory-mb", "64", "--root-gb", "1", "--swap-mb", "0"};
    auto refused = both(args, args, {});
    REQUIRE(refused.exit_code == 1);
    REQUIRE(refused.output["error"]["code"] == "image_not_found");
    REQUIRE(refused.output["error"]["uuid"] == uuid);
    REQUIRE(refused.output["error"]["image_id"] == missing);
    REQUIRE(refused.output["error"]["step"] == "looking up the image");
  }

  SECTION("a cache fetch of an image Glance does not have, a delete of a uuid that is not one") {
    std::string missing = kiln::test::random_uuid();
    auto refused = both({"cache", "fetch", missing}, {"cache", "fetch", missing}, {});
    REQUIRE(refused.exit_code == 1);
    REQUIRE(refused.output["error"]["code"] == "image_not_found");
    REQUIRE(refused.output["error"]["image_id"] == missing);
    auto invalid = both({"delete", "not-a-uuid"}, {"delete", "not-a-uuid"}, {});
    REQUIRE(invalid.exit_code == 1);
    REQUIRE(invalid.output["error"]["code"] == "invalid_uuid");
    REQUIRE(invalid.output["error"]["uuid"] == "not-a-uuid");
  }

  SECTION("instance list, instance show and cache ls, as kilnd answers GET /v1/...") {
    std::string uuid = kiln::test::random_uuid();
    // Booted directly: kilnd holds no operation for it, which a second boot
    // through kilnd would join (the same body is the same operation).
    REQUIRE(kilnctl_with_config(host.config, {"--direct", "boot", "--image", through_image, "--uuid", uuid, "--vcpus", "1",
                                              "--memory-mb", "64", "--root-gb", "1", "--swap-mb", "0", "--no-start",
                                              "--name", "parity \xc3\xa9"})
                .exit_code == 0);
    // A second boot of the uuid: refused before anything starts, the same way.
    std::vector<std::string> again = {"boot", "--image", through_image, "--uuid", uuid, "--vcpus", "1",
                                      "--memory-mb", "64", "--root-gb", "1", "--swap-mb", "0", "--no-start"};
    auto exists = both(again, again, {});
    REQUIRE(exists.exit_code == 1);
    REQUIRE(exists.output["error"]["code"] == "instance_exists");
    REQUIRE(exists.output["error"]["uuid"] == uuid);
    REQUIRE_FALSE(exists.output["error"].contains("step"));
    auto answered = kilnd.client().call(
        "POST", "/v1/instances",
        json{{"uuid", uuid}, {"image_id", through_image},
             {"flavor", {{"vcpus", 1}, {"memory_mb", 64}, {"root_gb", 1}, {"swap_mb", 0}}}, {"start", false}});
    REQUIRE(answered.status == 409);
    REQUIRE(answered.body == exists.output);  // the API's envelope names the uuid and image too

    auto listed = same_as_kilnd({"instance", "list"}, "/v1/instances", {uuid});
    REQUIRE(only_ours(listed.body, {uuid})["instances"].size() == 1);
    REQUIRE(listed.body["instances"].size() >= 1);
    auto shown = same_as_kilnd({"instance", "show", uuid}, "/v1/instances/" + uuid, {});
    REQUIRE(shown.body["domain"]["title"] == "parity \xc3\xa9");
    REQUIRE(shown.body["disks"].size() == 1);
    auto cached = same_as_kilnd({"cache", "ls"}, "/v1/cache", {});
    REQUIRE(cached.body["bases"].size() == 1);
    REQUIRE(cached.body["bases"][0]["image_id"] == through_image);
    REQUIRE(cached.body["bases"][0]["in_use"] == 1);

    std::string unknown = kiln::test::random_uuid();
    auto not_found = same_as_kilnd({"instance", "show", unknown}, "/v1/instances/" + unknown, {});
    REQUIRE(not_found.status == 404);
    REQUIRE(not_found.body["error"]["code"] == "not_found");
    REQUIRE(not_found.body["error"]["uuid"] == unknown);
    REQUIRE(kilnctl_with_config(host.config, {"delete", uuid}).exit_code == 0);
  }

  SECTION("cache prune, dry run and real, on the same state") {
    fs::path base = host.instances / "_base" / kiln::cache::base_name_for(through_image);
    auto old_unused_base = [&] {
      REQUIRE(kilnctl_with_config(host.config, {"cache", "fetch", through_image}).exit_code == 0);
      age_base(base, std::chrono::hours(48));
    };
    old_unused_base();
    auto dry = both({"cache", "prune", "--dry-run"}, {"cache", "prune", "--dry-run"}, {});
    REQUIRE(dry.exit_code == 0);
    REQUIRE(dry.output["dry_run"] == true);
    REQUIRE(dry.output["decisions"].size() == 1);
    REQUIRE(dry.output["decisions"][0]["removed"] == false);
    REQUIRE(fs::exists(base));

    // The real one removes the base: made again (same image, same base name)
    // before the other path prunes.
    auto through = kilnctl_with_config(host.config, {"cache", "prune"});
    REQUIRE(through.exit_code == 0);
    REQUIRE_FALSE(fs::exists(base));
    REQUIRE(kilnd.log().find("rpc POST /v1/cache/prune -> 200") != std::string::npos);
    old_unused_base();
    auto direct = kilnctl_with_config(host.config, {"--direct", "cache", "prune"});
    INFO("through kilnd: " << through.output.dump(2) << "\ndirect: " << direct.output.dump(2));
    REQUIRE(direct.exit_code == 0);
    REQUIRE_FALSE(fs::exists(base));
    REQUIRE(direct.output == through.output);
    REQUIRE(through.output["decisions"].size() == 1);
    REQUIRE(through.output["decisions"][0]["removed"] == true);
  }

  SECTION("every command but boot and fetch on an instances path that has gone since kilnd started") {
    std::string uuid = kiln::test::random_uuid();
    fs::path moved = host.scratch / "instances.moved";
    fs::rename(host.instances, moved);
    struct PutBack {
      fs::path from, to;
      ~PutBack() {
        std::error_code ignored;
        fs::rename(from, to, ignored);
      }
    } put_back{moved, host.instances};
    for (const auto& args : std::vector<std::vector<std::string>>{
             {"delete", uuid}, {"cache", "prune"}, {"cache", "prune", "--dry-run"}}) {
      INFO(kiln::describe(args));
      auto refused = both(args, args, {});
      REQUIRE(refused.exit_code == 1);
      REQUIRE(refused.output["error"]["code"] == "not_an_instances_path");
    }
    for (const auto& [args, target] : std::vector<std::pair<std::vector<std::string>, std::string>>{
             {{"instance", "list"}, "/v1/instances"},
             {{"instance", "show", uuid}, "/v1/instances/" + uuid},
             {{"cache", "ls"}, "/v1/cache"}}) {
      INFO(kiln::describe(args));
      auto refused = same_as_kilnd(args, target, {});
      REQUIRE(refused.body["error"]["code"] == "not_an_instances_path");
    }
    REQUIRE_FALSE(fs::exists(host.instances));  // and nothing was made there
  }
  REQUIRE(kilnd.stop(SIGTERM) == 0);
}

// The boot requests the issue found kilnctl accepting or kilnd answering 202
// for: refused by kilnctl (direct and with kilnd running) with exit 2 before
// anything starts, and by kilnd with 400, the same code, pointer and message.
TEST_CASE("kilnctl and kilnd refuse the same bad boot requests with the same code, pointer and message") {
  AgentHost host;
  kiln::test::KilndProcess kilnd(host.config, host.socket);
  REQUIRE(kilnd.wait_ready());
  kiln::test::make_qcow2(host.scratch / "image.qcow2", "16M");
  std::string image_id = kiln::test::upload_image("refused", "qcow2", host.scratch / "image.qcow2");

  struct Case {
    std::string what;
    std::vector<std::string> flags;  // kilnctl flags that replace or add to the good request's
    std::function<void(json&)> edit;  // the same change to kilnd's body
    std::string pointer;
  };
  std::vector<std::string> seventeen_nics;
  json seventeen = json::array();
  for (int i = 0; i < 17; ++i) {
    char mac[32];
    std::snprintf(mac, sizeof mac, "52:54:00:00:00:%02x", i);
    seventeen_nics.insert(seventeen_nics.end(), {"--nic", std::string("type=ethernet,mac=") + mac});
    seventeen.push_back({{"type", "ethernet"}, {"mac", mac}});
  }
  std::vector<Case> cases = {
      {"vcpus 4096", {"--vcpus", "4096"}, [](json& b) { b["flavor"]["vcpus"] = 4096; }, "/flavor/vcpus"},
      {"memory 1 MiB", {"--memory-mb", "1"}, [](json& b) { b["flavor"]["memory_mb"] = 1; }, "/flavor/memory_mb"},
      {"a 1 PiB root disk", {"--root-gb", "1048576"}, [](json& b) { b["flavor"]["root_gb"] = 1048576; },
       "/flavor/root_gb"},
      {"17 NICs", seventeen_nics, [&](json& b) { b["nics"] = seventeen; }, "/nics"},
      {"a multicast MAC", {"--nic", "type=ethernet,mac=01:00:5e:00:00:01"},
       [](json& b) { b["nics"] = {{{"type", "ethernet"}, {"mac", "01:00:5e:00:00:01"}}}; }, "/nics/0/mac"},
      {"an all-zero MAC", {"--nic", "type=ethernet,mac=00:00:00:00:00:00"},
       [](json& b) { b["nics"] = {{{"type", "ethernet"}, {"mac", "00:00:00:00:00:00"}}}; }, "/nics/0/mac"},
      {"a MAC twice", {"--nic", "type=ethernet,mac=52:54:00:aa:bb:cc", "--nic", "type=ethernet,mac=52:54:00:AA:BB:CC"},
       [](json& b) {
         b["nics"] = {{{"type", "ethernet"}, {"mac", "52:54:00:aa:bb:cc"}},
                      {{"type", "ethernet"}, {"mac", "52:54:00:AA:BB:CC"}}};
       },
       "/nics/1/mac"},
      {"a bridge NIC without a bridge", {"--nic", "type=bridge,mac=52:54:00:aa:bb:cc"},
       [](json& b) { b["nics"] = {{{"type", "bridge"}, {"mac", "52:54:00:aa:bb:cc"}}}; }, "/nics/0/bridge"},
  };
  for (const auto& c : cases) {
    INFO(c.what);
    std::string uuid = kiln::test::random_uuid();
    std::map<std::string, std::string> good = {{"--vcpus", "1"}, {"--memory-mb", "64"}, {"--root-gb", "1"},
                                               {"--swap-mb", "0"}};
    std::vector<std::string> args = {"boot", "--image", image_id, "--uuid", uuid};
    for (std::size_t i = 0; i < c.flags.size(); i += 2) {
      if (good.count(c.flags[i])) good[c.flags[i]] = c.flags[i + 1];
      else args.insert(args.end(), {c.flags[i], c.flags[i + 1]});
    }
    for (const auto& [flag, value] : good) args.insert(args.end(), {flag, value});

    json body = {{"uuid", uuid}, {"image_id", image_id},
                 {"flavor", {{"vcpus", 1}, {"memory_mb", 64}, {"root_gb", 1}, {"swap_mb", 0}}}};
    c.edit(body);
    auto answer = kilnd.client().call("POST", "/v1/instances", body);
    INFO("kilnd: " << answer.status << " " << answer.body.dump());
    REQUIRE(answer.status == 400);
    REQUIRE(answer.body["error"]["code"] == "invalid_argument");
    REQUIRE(answer.body["error"]["pointer"] == c.pointer);

    for (bool direct : {true, false}) {
      auto run_args = args;
      if (direct) run_args.insert(run_args.begin(), "--direct");
      auto refused = kilnctl_with_config(host.config, run_args);
      INFO((direct ? "kilnctl --direct: " : "kilnctl with kilnd: ") << refused.output.dump());
      REQUIRE(refused.exit_code == 2);
      REQUIRE(refused.output == answer.body);  // code, message and pointer
      REQUIRE(refused.err.find("error [invalid_argument]") != std::string::npos);
    }
    REQUIRE_FALSE(fs::exists(host.instances / uuid));
  }
  REQUIRE_FALSE(fs::exists(host.instances / "_base" / kiln::cache::base_name_for(image_id)));
  REQUIRE(metric(kilnd, "kiln_boots_total") == 0);
  REQUIRE(kilnd.stop(SIGTERM) == 0);
}
