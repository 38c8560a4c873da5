#include <catch2/catch.hpp>
#include <pugixml.hpp>

#include "assertions.h"
#include "kiln/util/subprocess.h"
#include "kiln/virt/connection.h"
#include "kiln/virt/domain_xml.h"
#include "scratch.h"

using kiln::ErrorCode;

namespace {

kiln::virt::DomainSpec sample_spec(const std::string& uuid) {
  kiln::virt::DomainSpec spec;
  spec.domain_type = "kvm";
  spec.name = "instance-" + uuid;
  spec.uuid = uuid;
  spec.memory_mb = 512;
  spec.vcpus = 2;
  spec.disks.push_back({"/var/lib/kiln/instances/" + uuid + "/disk", "qcow2", "vda", "virtio", "none"});
  spec.disks.push_back({"/var/lib/kiln/instances/" + uuid + "/disk.swap", "qcow2", "vdb", "virtio", "none"});
  spec.console_log = "/var/lib/kiln/instances/" + uuid + "/console.log";
  spec.image_id = "c1a1c7b6-1b0e-4a5c-8a47-3c0c5e1f2a11";
  spec.display_name = "web-1";
  return spec;
}

std::string text_at(const pugi::xml_document& document, const char* xpath) {
  return document.select_node(xpath).node().text().get();
}

std::string attribute_at(const pugi::xml_document& document, const char* xpath) {
  return document.select_node(xpath).attribute().value();
}

}  // namespace

TEST_CASE("the domain XML describes the instance as Nova would for a KVM guest") {
  std::string uuid = kiln::test::random_uuid();
  pugi::xml_document document;
  REQUIRE(document.load_string(kiln::virt::build_domain_xml(sample_spec(uuid)).c_str()));
  REQUIRE(attribute_at(document, "/domain/@type") == "kvm");
  REQUIRE(text_at(document, "/domain/uuid") == uuid);
  REQUIRE(text_at(document, "/domain/memory") == "524288");
  REQUIRE(attribute_at(document, "/domain/memory/@unit") == "KiB");
  REQUIRE(text_at(document, "/domain/vcpu") == "2");
  REQUIRE(text_at(document, "/domain/sysinfo/system/entry[@name='serial']") == uuid);
  REQUIRE(attribute_at(document, "/domain/os/smbios/@mode") == "sysinfo");
  REQUIRE(attribute_at(document, "/domain/cpu/@mode") == "host-model");
  REQUIRE(attribute_at(document, "/domain/devices/disk[target/@dev='vda']/driver/@type") == "qcow2");
  REQUIRE(attribute_at(document, "/domain/devices/disk[target/@dev='vda']/driver/@cache") == "none");
  REQUIRE(attribute_at(document, "/domain/devices/disk[target/@dev='vdb']/source/@file") ==
          "/var/lib/kiln/instances/" + uuid + "/disk.swap");
  REQUIRE(attribute_at(document, "/domain/devices/serial/log/@file") ==
          "/var/lib/kiln/instances/" + uuid + "/console.log");
  REQUIRE(attribute_at(document, "/domain/devices/memballoon/@model") == "virtio");
}

TEST_CASE("a qemu (TCG) domain asks for no host CPU model") {
  auto spec = sample_spec(kiln::test::random_uuid());
  spec.domain_type = "qemu";
  pugi::xml_document document;
  REQUIRE(document.load_string(kiln::virt::build_domain_xml(spec).c_str()));
  REQUIRE(attribute_at(document, "/domain/@type") == "qemu");
  REQUIRE_FALSE(document.select_node("/domain/cpu"));
}

TEST_CASE("the domain XML passes virt-xml-validate, with and without swap") {
  kiln::test::ScratchDir scratch;
  for (bool swap : {true, false}) {
    auto spec = sample_spec(kiln::test::random_uuid());
    if (!swap) spec.disks.pop_back();
    kiln::test::write_text(scratch / "libvirt.xml", kiln::virt::build_domain_xml(spec));
    auto result = kiln::run({{"virt-xml-validate", (scratch / "libvirt.xml").string(), "domain"}});
    INFO(result.out << result.err);
    REQUIRE(result.exit_code == 0);
  }
}

TEST_CASE("libvirt defines, starts, reports, destroys and undefines the domain (test driver)") {
  kiln::virt::Connection libvirt("test:///default");
  std::string uuid = kiln::test::random_uuid();
  auto domain = libvirt.define(kiln::virt::build_domain_xml(sample_spec(uuid)));
  REQUIRE(domain.uuid() == uuid);
  REQUIRE(domain.state() == "shut off");
  domain.start();
  REQUIRE(domain.state() == "running");
  REQUIRE(libvirt.lookup_by_uuid(uuid).has_value());
  domain.destroy();
  domain.undefine();
  REQUIRE_FALSE(libvirt.lookup_by_uuid(uuid).has_value());
}

TEST_CASE("libvirt's refusal carries its code and message") {
  kiln::virt::Connection libvirt("test:///default");
  REQUIRE_KILN_ERROR_MENTIONS(libvirt.define("<domain type='kvm'><name>x</name></domain>"),
                              ErrorCode::kLibvirtError, "libvirt error");
  REQUIRE_KILN_ERROR(kiln::virt::Connection("nonsense:///nowhere"), ErrorCode::kLibvirtError);
}
