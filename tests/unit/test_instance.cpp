// lib/instance without Glance: instance directories built the way provision()
// builds them (raw base in _base, native overlay, libvirt.xml, domain defined
// on test:///default), then inspected, damaged, reconciled and recovered.
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <fstream>

#include "assertions.h"
#include "kiln/disk/overlay.h"
#include "kiln/instance/disk_usage.h"
#include "kiln/instance/instance_dir.h"
#include "kiln/instance/inventory.h"
#include "kiln/instance/reconcile.h"
#include "kiln/util/fs.h"
#include "kiln/virt/domain_xml.h"
#include "scratch.h"

namespace fs = std::filesystem;
using kiln::instance::InstanceDir;

namespace {

constexpr std::uint64_t kMiB = 1024 * 1024;

// A raw base with `data_mib` MiB of non-zero data (allocated) in a 64 MiB file.
fs::path make_base(const fs::path& instances_path, const std::string& name, unsigned data_mib) {
  fs::create_directories(instances_path / "_base");
  fs::path path = instances_path / "_base" / name;
  std::ofstream out(path, std::ios::binary);
  std::string block(kMiB, '\x5a');
  for (unsigned i = 0; i < data_mib; ++i) out.write(block.data(), static_cast<std::streamsize>(block.size()));
  out.close();
  fs::resize_file(path, 64 * kMiB);
  return path;
}

// The directory provision() would leave, with its domain defined.
InstanceDir make_instance(const fs::path& instances_path, kiln::virt::Connection& libvirt, const fs::path& base,
                          bool define = true) {
  InstanceDir directory(instances_path, kiln::test::random_uuid());
  fs::create_directories(directory.path());
  kiln::disk::create_overlay(directory.disk(), base, 128 * kMiB);
  kiln::test::write_text(directory.console_log(), "");
  kiln::virt::DomainSpec spec;
  spec.domain_type = "kvm";  // the test driver accepts any type
  spec.name = "instance-" + directory.uuid();
  spec.memory_mb = 64;
  spec.vcpus = 1;
  spec.uuid = directory.uuid();
  spec.root_disk = kiln::virt::DiskFile{directory.disk().string(), "qcow2", std::nullopt};
  spec.console_log = directory.console_log().string();
  spec.image_id = "c1a1c7b6-1b0e-4a5c-8a47-3c0c5e1f2a11";
  spec.display_name = "web";
  std::string xml = kiln::virt::build_domain_xml(spec);
  kiln::atomic_write_file(directory.libvirt_xml(), xml);
  if (define) libvirt.define(xml);
  return directory;
}

const kiln::instance::ReconcileFinding* finding_for(const kiln::instance::ReconcileReport& report,
                                                    const std::string& uuid) {
  for (const auto& finding : report.findings) {
    if (finding.uuid == uuid) return &finding;
  }
  return nullptr;
}

}  // namespace

TEST_CASE("show_instance walks the backing chain natively, as qemu-img info --backing-chain would") {
  kiln::test::ScratchDir scratch;
  kiln::virt::Connection libvirt("test:///default");
  fs::path base = make_base(scratch.path(), "base-a", 3);
  InstanceDir directory = make_instance(scratch.path(), libvirt, base);

  auto report = kiln::instance::show_instance(directory.uuid(), scratch.path(), libvirt);
  REQUIRE(report.has_directory);
  REQUIRE_FALSE(report.provisioning);
  REQUIRE(report.domain_name == "instance-" + directory.uuid());
  REQUIRE(report.domain_state == "shut off");
  REQUIRE(report.disks.size() == 1);
  const auto& disk = report.disks[0];
  REQUIRE(disk.name == "disk");
  REQUIRE(disk.problem.empty());
  REQUIRE(disk.chain.size() == 2);
  REQUIRE(disk.chain[0].format == "qcow2");
  REQUIRE(disk.chain[0].virtual_size == 128 * kMiB);
  REQUIRE(disk.chain[0].physical_bytes < kMiB);
  REQUIRE(disk.chain[1].path == base);
  REQUIRE(disk.chain[1].format == "raw");
  REQUIRE(disk.chain[1].virtual_size == 64 * kMiB);
  REQUIRE(disk.chain[1].physical_bytes >= 3 * kMiB);
  REQUIRE(disk.chain[1].physical_bytes < 5 * kMiB);

  auto json = kiln::instance::to_json(report);
  REQUIRE(json["domain"]["state"] == "shut off");
  REQUIRE(json["disks"][0]["backing_chain"][1]["format"] == "raw");
  REQUIRE(json["disks"][0]["problem"].is_null());
}

TEST_CASE("show_instance names a missing base and an unknown instance") {
  kiln::test::ScratchDir scratch;
  kiln::virt::Connection libvirt("test:///default");
  fs::path base = make_base(scratch.path(), "base-a", 1);
  InstanceDir directory = make_instance(scratch.path(), libvirt, base);
  fs::remove(base);
  auto report = kiln::instance::show_instance(directory.uuid(), scratch.path(), libvirt);
  REQUIRE(report.disks.at(0).problem == base.string() + " is missing");
  REQUIRE_FALSE(report.disks.at(0).chain.at(1).exists);

  REQUIRE_KILN_ERROR(kiln::instance::show_instance(kiln::test::random_uuid(), scratch.path(), libvirt),
                     kiln::ErrorCode::kNotFound);
  REQUIRE_KILN_ERROR(kiln::instance::show_instance("../etc", scratch.path(), libvirt),
                     kiln::ErrorCode::kInvalidUuid);
}

TEST_CASE("list_instances joins directories with kiln's domains and ignores other domains") {
  kiln::test::ScratchDir scratch;
  kiln::virt::Connection libvirt("test:///default");  // also has its own domain "test", not kiln's
  fs::path base = make_base(scratch.path(), "base-a", 1);
  InstanceDir defined = make_instance(scratch.path(), libvirt, base);
  InstanceDir undefined = make_instance(scratch.path(), libvirt, base, false);
  fs::create_directories(scratch / "not-an-instance");

  auto reports = kiln::instance::list_instances(scratch.path(), libvirt);
  REQUIRE(reports.size() == 2);
  for (const auto& report : reports) {
    REQUIRE(report.has_directory);
    REQUIRE(report.domain_name.has_value() == (report.uuid == defined.uuid()));
  }
}

TEST_CASE("reconcile undoes boots that never finished, keeps running provisions and reports the rest") {
  kiln::test::ScratchDir scratch;
  kiln::virt::Connection libvirt("test:///default");
  fs::path base = make_base(scratch.path(), "base-a", 1);
  InstanceDir whole = make_instance(scratch.path(), libvirt, base);
  InstanceDir half_built = make_instance(scratch.path(), libvirt, base, false);
  kiln::test::write_text(half_built.provisioning_marker(), "{}\n{\"step\":\"root_disk\"}\n");
  InstanceDir half_defined = make_instance(scratch.path(), libvirt, base);
  kiln::test::write_text(half_defined.provisioning_marker(), "{}\n");
  InstanceDir in_progress = make_instance(scratch.path(), libvirt, base, false);
  kiln::test::write_text(in_progress.provisioning_marker(), "{}\n");
  kiln::UniqueFd held = kiln::open_file(in_progress.provisioning_marker(), O_RDONLY);
  REQUIRE(::flock(held.get(), LOCK_EX) == 0);  // as a live provision holds it
  InstanceDir orphan_directory = make_instance(scratch.path(), libvirt, base, false);
  InstanceDir orphan_domain = make_instance(scratch.path(), libvirt, base);
  fs::remove_all(orphan_domain.path());
  std::string before = kiln::test::tree_listing(scratch.path());

  auto dry = kiln::instance::reconcile(scratch.path(), libvirt, true);
  REQUIRE(kiln::test::tree_listing(scratch.path()) == before);
  REQUIRE(dry.findings.size() == 4);
  REQUIRE(finding_for(dry, half_built.uuid())->action.find("would remove") == 0);

  auto report = kiln::instance::reconcile(scratch.path(), libvirt, false);
  REQUIRE(report.instances_seen == 6);
  REQUIRE(report.findings.size() == 4);
  REQUIRE(finding_for(report, whole.uuid()) == nullptr);
  REQUIRE(finding_for(report, in_progress.uuid()) == nullptr);
  REQUIRE(finding_for(report, half_built.uuid())->kind == "half_built");
  REQUIRE(finding_for(report, half_built.uuid())->action.find("steps done: root_disk") != std::string::npos);
  REQUIRE_FALSE(fs::exists(half_built.path()));
  // Defined, but its boot never reported success: undone as a failed boot is.
  REQUIRE(finding_for(report, half_defined.uuid())->kind == "half_defined");
  REQUIRE(finding_for(report, half_defined.uuid())->changed);
  REQUIRE_FALSE(fs::exists(half_defined.path()));
  REQUIRE_FALSE(libvirt.lookup_by_uuid(half_defined.uuid()).has_value());
  REQUIRE(fs::exists(in_progress.provisioning_marker()));
  REQUIRE(finding_for(report, orphan_directory.uuid())->kind == "directory_without_domain");
  REQUIRE(fs::exists(orphan_directory.disk()));
  REQUIRE(finding_for(report, orphan_domain.uuid())->kind == "domain_without_directory");
  REQUIRE(libvirt.lookup_by_uuid(orphan_domain.uuid()).has_value());
  REQUIRE(fs::exists(base));

  auto again = kiln::instance::reconcile(scratch.path(), libvirt, false);
  REQUIRE(again.findings.size() == 2);  // the two it only reports
}

TEST_CASE("recover re-defines a domain from libvirt.xml once its disks check out") {
  kiln::test::ScratchDir scratch;
  kiln::virt::Connection libvirt("test:///default");
  fs::path base = make_base(scratch.path(), "base-a", 1);
  InstanceDir directory = make_instance(scratch.path(), libvirt, base);
  libvirt.lookup_by_uuid(directory.uuid())->undefine();

  auto result = kiln::instance::recover_instance(directory.uuid(), scratch.path(), libvirt, true);
  REQUIRE_FALSE(result.already_defined);
  REQUIRE(result.domain_state == "running");
  auto domain = libvirt.lookup_by_uuid(directory.uuid());
  REQUIRE(domain.has_value());
  REQUIRE(domain->is_kiln_instance());

  auto again = kiln::instance::recover_instance(directory.uuid(), scratch.path(), libvirt, true);
  REQUIRE(again.already_defined);
}

TEST_CASE("recover refuses a directory it cannot trust, and changes nothing") {
  kiln::test::ScratchDir scratch;
  kiln::virt::Connection libvirt("test:///default");
  fs::path base = make_base(scratch.path(), "base-a", 1);

  SECTION("the base is gone") {
    InstanceDir directory = make_instance(scratch.path(), libvirt, base, false);
    fs::remove(base);
    REQUIRE_KILN_ERROR_MENTIONS(kiln::instance::recover_instance(directory.uuid(), scratch.path(), libvirt, false),
                                kiln::ErrorCode::kInstanceBroken, base.string() + " is missing");
    REQUIRE_FALSE(libvirt.lookup_by_uuid(directory.uuid()));
  }
  SECTION("the overlay is backed by a file outside _base") {
    fs::path elsewhere = scratch / "elsewhere.raw";
    fs::copy_file(base, elsewhere);
    InstanceDir directory = make_instance(scratch.path(), libvirt, elsewhere, false);
    REQUIRE_KILN_ERROR_MENTIONS(kiln::instance::recover_instance(directory.uuid(), scratch.path(), libvirt, false),
                                kiln::ErrorCode::kInstanceBroken, "outside");
  }
  SECTION("the disk is gone") {
    InstanceDir directory = make_instance(scratch.path(), libvirt, base, false);
    fs::remove(directory.disk());
    REQUIRE_KILN_ERROR(kiln::instance::recover_instance(directory.uuid(), scratch.path(), libvirt, false),
                       kiln::ErrorCode::kInstanceBroken);
  }
  SECTION("the directory is half-built") {
    InstanceDir directory = make_instance(scratch.path(), libvirt, base, false);
    kiln::test::write_text(directory.provisioning_marker(), "{}\n");
    REQUIRE_KILN_ERROR(kiln::instance::recover_instance(directory.uuid(), scratch.path(), libvirt, false),
                       kiln::ErrorCode::kInstanceBroken);
  }
  SECTION("libvirt.xml names another uuid") {
    InstanceDir directory = make_instance(scratch.path(), libvirt, base, false);
    InstanceDir other(scratch.path(), kiln::test::random_uuid());
    fs::rename(directory.path(), other.path());
    REQUIRE_KILN_ERROR_MENTIONS(kiln::instance::recover_instance(other.uuid(), scratch.path(), libvirt, false),
                                kiln::ErrorCode::kInstanceBroken, "not the directory's");
  }
  SECTION("libvirt.xml attaches a network disk: an RBD image on a host without images_type = rbd, or iSCSI") {
    InstanceDir directory = make_instance(scratch.path(), libvirt, base, false);
    std::string xml = kiln::read_file(directory.libvirt_xml());
    auto devices = xml.find("<devices>");
    REQUIRE(devices != std::string::npos);
    std::string with_rbd = xml;
    with_rbd.insert(devices + 9, "<disk type='network' device='disk'><driver name='qemu' type='raw'/>"
                                 "<source protocol='rbd' name='vms/" + directory.uuid() + "_disk'/>"
                                 "<target dev='vdz' bus='virtio'/></disk>");
    kiln::test::write_text(directory.libvirt_xml(), with_rbd);
    REQUIRE_KILN_ERROR_MENTIONS(kiln::instance::recover_instance(directory.uuid(), scratch.path(), libvirt, false),
                                kiln::ErrorCode::kInstanceBroken, "images_type is not rbd");
    std::string with_iscsi = xml;
    with_iscsi.insert(devices + 9, "<disk type='network' device='disk'><source protocol='iscsi' name='iqn.x/1'/>"
                                   "<target dev='vdz' bus='virtio'/></disk>");
    kiln::test::write_text(directory.libvirt_xml(), with_iscsi);
    REQUIRE_KILN_ERROR_MENTIONS(kiln::instance::recover_instance(directory.uuid(), scratch.path(), libvirt, false),
                                kiln::ErrorCode::kInstanceBroken, "'iscsi' network disk");
    REQUIRE_FALSE(libvirt.lookup_by_uuid(directory.uuid()));
  }
  SECTION("there is no directory") {
    REQUIRE_KILN_ERROR(kiln::instance::recover_instance(kiln::test::random_uuid(), scratch.path(), libvirt, false),
                       kiln::ErrorCode::kNotFound);
  }
}

TEST_CASE("disk_usage does the operator's arithmetic: shared bases, and what deleting frees") {
  kiln::test::ScratchDir scratch;
  kiln::virt::Connection libvirt("test:///default");
  // Image bases are named by a SHA-1 in hex, or list_cache does not count them.
  fs::path shared = make_base(scratch.path(), std::string(40, 'a'), 4);
  fs::path single = make_base(scratch.path(), std::string(40, 'b'), 2);
  fs::path unused = make_base(scratch.path(), std::string(40, 'c'), 1);
  InstanceDir first = make_instance(scratch.path(), libvirt, shared);
  InstanceDir second = make_instance(scratch.path(), libvirt, shared);
  InstanceDir alone = make_instance(scratch.path(), libvirt, single);

  auto usage = kiln::instance::disk_usage(scratch.path());
  auto allocated = [](const fs::path& path) {
    struct stat status {};
    REQUIRE(::stat(path.c_str(), &status) == 0);
    return static_cast<std::uint64_t>(status.st_blocks) * 512;
  };
  REQUIRE(usage.bases.size() == 3);
  for (const auto& base : usage.bases) {
    fs::path path = scratch / "_base" / base.name;
    REQUIRE(base.bytes == allocated(path));
    if (path == shared) {
      REQUIRE(base.users == 2);
      REQUIRE(base.shared_bytes == base.bytes);
      REQUIRE(base.freed_by_deleting == 0);
    } else if (path == single) {
      REQUIRE(base.users == 1);
      REQUIRE(base.shared_bytes == 0);
      REQUIRE(base.freed_by_deleting == 0);
    } else {
      REQUIRE(path == unused);
      REQUIRE(base.users == 0);
      REQUIRE(base.freed_by_deleting == base.bytes);
    }
  }
  REQUIRE(usage.instances.size() == 3);
  for (const auto& instance : usage.instances) {
    REQUIRE(instance.own_bytes > 0);
    if (instance.uuid == alone.uuid()) {
      REQUIRE(instance.freed_by_deleting == instance.own_bytes + allocated(single));
      REQUIRE(instance.bases == std::vector<std::string>{std::string(40, 'b')});
    } else {
      REQUIRE(instance.freed_by_deleting == instance.own_bytes);
      REQUIRE(instance.backing_bytes == allocated(shared));
    }
  }
  REQUIRE(usage.bases_bytes == allocated(shared) + allocated(single) + allocated(unused));
  REQUIRE(usage.total_bytes >= usage.instances_bytes + usage.bases_bytes);
  REQUIRE(usage.total_bytes == usage.instances_bytes + usage.bases_bytes + usage.other_bytes);
  auto json = kiln::instance::to_json(usage);
  REQUIRE(json["totals"]["bases_bytes"] == usage.bases_bytes);
}
