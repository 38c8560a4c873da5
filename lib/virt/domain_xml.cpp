#include "kiln/virt/domain_xml.h"

#include <pugixml.hpp>
#include <sstream>

namespace kiln::virt {

namespace {

constexpr const char* kMetadataNamespace = "https://kiln.dev/xmlns/libvirt/kiln/1.0";

pugi::xml_node child_with_text(pugi::xml_node parent, const char* name, const std::string& text) {
  pugi::xml_node node = parent.append_child(name);
  node.text().set(text.c_str());
  return node;
}

void set(pugi::xml_node node, const char* attribute, const std::string& value) {
  node.append_attribute(attribute).set_value(value.c_str());
}

void add_metadata(pugi::xml_node domain, const DomainSpec& spec) {
  pugi::xml_node instance = domain.append_child("metadata").append_child("kiln:instance");
  set(instance, "xmlns:kiln", kMetadataNamespace);
  child_with_text(instance, "kiln:name", spec.display_name);
  child_with_text(instance, "kiln:image", spec.image_id);
}

void add_sysinfo(pugi::xml_node domain, const DomainSpec& spec) {
  pugi::xml_node sysinfo = domain.append_child("sysinfo");
  set(sysinfo, "type", "smbios");
  pugi::xml_node system = sysinfo.append_child("system");
  auto entry = [&](const char* name, const std::string& value) {
    set(child_with_text(system, "entry", value), "name", name);
  };
  entry("manufacturer", "kiln");
  entry("product", "kiln compute agent");
  entry("version", "0.1.0");
  entry("serial", spec.uuid);
  entry("uuid", spec.uuid);
  entry("family", "Virtual Machine");
}

void add_os_features_clock(pugi::xml_node domain, const DomainSpec& spec) {
  pugi::xml_node os = domain.append_child("os");
  pugi::xml_node type = child_with_text(os, "type", "hvm");
  set(type, "arch", "x86_64");
  set(type, "machine", spec.machine_type);
  set(os.append_child("boot"), "dev", "hd");
  set(os.append_child("smbios"), "mode", "sysinfo");

  pugi::xml_node features = domain.append_child("features");
  features.append_child("acpi");
  features.append_child("apic");

  if (spec.domain_type == "kvm") set(domain.append_child("cpu"), "mode", "host-model");

  pugi::xml_node clock = domain.append_child("clock");
  set(clock, "offset", "utc");
  auto timer = [&](const char* name, const char* attribute, const char* value) {
    pugi::xml_node node = clock.append_child("timer");
    set(node, "name", name);
    set(node, attribute, value);
  };
  timer("pit", "tickpolicy", "delay");
  timer("rtc", "tickpolicy", "catchup");
  timer("hpet", "present", "no");
}

void add_disk(pugi::xml_node devices, const DiskDevice& disk) {
  pugi::xml_node node = devices.append_child("disk");
  set(node, "type", "file");
  set(node, "device", "disk");
  pugi::xml_node driver = node.append_child("driver");
  set(driver, "name", "qemu");
  set(driver, "type", disk.format);
  set(driver, "cache", disk.cache_mode);
  set(node.append_child("source"), "file", disk.path);
  pugi::xml_node target = node.append_child("target");
  set(target, "dev", disk.target);
  set(target, "bus", disk.bus);
}

void add_console(pugi::xml_node devices, const DomainSpec& spec) {
  pugi::xml_node serial = devices.append_child("serial");
  set(serial, "type", "pty");
  pugi::xml_node log = serial.append_child("log");
  set(log, "file", spec.console_log);
  set(log, "append", "off");
  pugi::xml_node console = devices.append_child("console");
  set(console, "type", "pty");
  pugi::xml_node target = console.append_child("target");
  set(target, "type", "serial");
  set(target, "port", "0");
}

void add_virtio_devices(pugi::xml_node devices) {
  pugi::xml_node balloon = devices.append_child("memballoon");
  set(balloon, "model", "virtio");
  set(balloon.append_child("stats"), "period", "10");
  pugi::xml_node rng = devices.append_child("rng");
  set(rng, "model", "virtio");
  pugi::xml_node backend = child_with_text(rng, "backend", "/dev/urandom");
  set(backend, "model", "random");
}

}  // namespace

std::string build_domain_xml(const DomainSpec& spec) {
  pugi::xml_document document;
  pugi::xml_node domain = document.append_child("domain");
  set(domain, "type", spec.domain_type);
  child_with_text(domain, "name", spec.name);
  child_with_text(domain, "uuid", spec.uuid);
  add_metadata(domain, spec);
  set(child_with_text(domain, "memory", std::to_string(spec.memory_mb * 1024)), "unit", "KiB");
  child_with_text(domain, "vcpu", std::to_string(spec.vcpus));
  add_sysinfo(domain, spec);
  add_os_features_clock(domain, spec);

  pugi::xml_node devices = domain.append_child("devices");
  for (const DiskDevice& disk : spec.disks) add_disk(devices, disk);
  add_console(devices, spec);
  add_virtio_devices(devices);

  std::ostringstream out;
  document.save(out, "  ", pugi::format_indent | pugi::format_no_declaration);
  return out.str();
}

}  // namespace kiln::virt
