#include "kiln/virt/domain_xml.h"

#include <algorithm>
#include <cctype>
#include <pugixml.hpp>
#include <sstream>

#include "checks.h"
#include "disk_plan.h"

namespace kiln::virt {

namespace {

using detail::PlannedDisk;

// Nova's CONSOLE: the first console on the VGA, then the serial port that
// console.log records, then a virtio console if the guest has one.
constexpr const char* kKernelConsoles = "console=tty0 console=ttyS0 console=hvc0";
// Nova's retry count for Windows spinlocks, as certified with Microsoft.
constexpr const char* kHyperVSpinlockRetries = "8191";
// Nova's Hyper-V enlightenments for Windows, in Nova's order.
constexpr std::array<const char*, 10> kHyperVFeatures{
    "relaxed", "vapic", "spinlocks", "vpindex", "runtime",
    "synic",   "reset", "frequencies", "tlbflush", "ipi"};

pugi::xml_node child_with_text(pugi::xml_node parent, const char* name, const std::string& text) {
  pugi::xml_node node = parent.append_child(name);
  node.text().set(text.c_str());
  return node;
}

void set(pugi::xml_node node, const char* attribute, const std::string& value) {
  node.append_attribute(attribute).set_value(value.c_str());
}

pugi::xml_node child_with(pugi::xml_node parent, const char* name, const char* attribute,
                          const std::string& value) {
  pugi::xml_node node = parent.append_child(name);
  set(node, attribute, value);
  return node;
}

bool uses_bus(const std::vector<PlannedDisk>& disks, const std::string& bus) {
  return std::any_of(disks.begin(), disks.end(), [&](const PlannedDisk& disk) { return disk.bus == bus; });
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

// OVMF from pflash, read-only and shared; the variables are the instance's
// own copy of the template, made by libvirt on first start.
void add_uefi_firmware(pugi::xml_node os, const DomainSpec& spec) {
  pugi::xml_node loader = child_with_text(os, "loader", spec.firmware_code);
  set(loader, "readonly", "yes");
  set(loader, "secure", spec.secure_boot ? "yes" : "no");
  set(loader, "type", "pflash");
  set(child_with_text(os, "nvram", spec.nvram_path), "template", spec.firmware_variables_template);
}

std::string kernel_command_line(const DomainSpec& spec, const std::vector<PlannedDisk>& disks) {
  if (!spec.kernel_command_line.empty()) return spec.kernel_command_line;
  std::string line = "root=/dev/" + disks.front().target + " " + kKernelConsoles;
  // Nova's workaround for the TSC check that fails under emulation.
  if (spec.domain_type == "qemu") line += " no_timer_check";
  return line;
}

void add_os(pugi::xml_node domain, const DomainSpec& spec, const std::vector<PlannedDisk>& disks) {
  pugi::xml_node os = domain.append_child("os");
  pugi::xml_node type = child_with_text(os, "type", "hvm");
  set(type, "arch", "x86_64");
  set(type, "machine", spec.machine_type);
  if (spec.firmware == "uefi") add_uefi_firmware(os, spec);
  if (!spec.kernel_path.empty()) {
    child_with_text(os, "kernel", spec.kernel_path);
    if (!spec.initrd_path.empty()) child_with_text(os, "initrd", spec.initrd_path);
    child_with_text(os, "cmdline", kernel_command_line(spec, disks));
  } else {
    if (spec.boot_from_cdrom) child_with(os, "boot", "dev", "cdrom");
    child_with(os, "boot", "dev", "hd");
  }
  if (spec.boot_menu) child_with(os, "bootmenu", "enable", "yes");
  child_with(os, "smbios", "mode", "sysinfo");
}

// Hyper-V enlightenments are paravirtual interfaces of KVM; QEMU's TCG
// refuses to start with them, so only a Windows guest on KVM gets them.
void add_hyperv(pugi::xml_node features) {
  pugi::xml_node hyperv = features.append_child("hyperv");
  for (const char* feature : kHyperVFeatures) {
    pugi::xml_node node = child_with(hyperv, feature, "state", "on");
    if (std::string_view(feature) == "spinlocks") set(node, "retries", kHyperVSpinlockRetries);
  }
}

void add_features(pugi::xml_node domain, const DomainSpec& spec) {
  pugi::xml_node features = domain.append_child("features");
  features.append_child("acpi");
  features.append_child("apic");
  if (spec.os_type == "windows" && spec.domain_type == "kvm") add_hyperv(features);
  if (spec.domain_type == "kvm" && spec.hide_hypervisor_id) {
    child_with(features.append_child("kvm"), "hidden", "state", "on");
  }
  if (spec.pmu) child_with(features, "pmu", "state", *spec.pmu ? "on" : "off");
  // OVMF's Secure Boot build keeps its variables safe from the OS in SMM.
  if (spec.secure_boot) child_with(features, "smm", "state", "on");
  // Lets a guest kernel's crash dump be found by the host (Nova, x86).
  features.append_child("vmcoreinfo");
}

void add_timer(pugi::xml_node clock, const char* name, const char* attribute, const char* value) {
  set(child_with(clock, "timer", "name", name), attribute, value);
}

// Windows keeps the RTC in local time (Nova, after Microsoft KB2687252).
// The timers are Nova's for KVM, where the host's ticks are real.
void add_clock(pugi::xml_node domain, const DomainSpec& spec) {
  bool windows = spec.os_type == "windows";
  pugi::xml_node clock = child_with(domain, "clock", "offset", windows ? "localtime" : "utc");
  if (spec.domain_type != "kvm") {
    if (spec.hpet) add_timer(clock, "hpet", "present", *spec.hpet ? "yes" : "no");
    return;
  }
  add_timer(clock, "pit", "tickpolicy", "delay");
  add_timer(clock, "rtc", "tickpolicy", "catchup");
  add_timer(clock, "hpet", "present", spec.hpet.value_or(false) ? "yes" : "no");
  if (windows) add_timer(clock, "hypervclock", "present", "yes");
}

// <source protocol='rbd' name='pool/image'> with the monitors, and the
// <auth> QEMU logs in with: libvirt hands it the secret's value itself.
void add_rbd_source(pugi::xml_node node, const RbdSource& rbd) {
  pugi::xml_node source = child_with(node, "source", "protocol", "rbd");
  set(source, "name", rbd.name);
  for (const CephMonitor& monitor : rbd.monitors) {
    set(child_with(source, "host", "name", monitor.host), "port", std::to_string(monitor.port));
  }
  pugi::xml_node auth = child_with(node, "auth", "username", rbd.username);
  set(child_with(auth, "secret", "type", "ceph"), "uuid", rbd.secret_uuid);
}

void add_disk(pugi::xml_node devices, const PlannedDisk& disk) {
  pugi::xml_node node = devices.append_child("disk");
  set(node, "type", disk.rbd ? "network" : "file");
  set(node, "device", disk.device);
  pugi::xml_node driver = node.append_child("driver");
  set(driver, "name", "qemu");
  set(driver, "type", disk.format);
  set(driver, "cache", disk.cache_mode);
  if (disk.rbd) {
    add_rbd_source(node, *disk.rbd);
  } else {
    child_with(node, "source", "file", disk.path);
  }
  pugi::xml_node target = child_with(node, "target", "dev", disk.target);
  set(target, "bus", disk.bus);
  if (disk.read_only) node.append_child("readonly");
}

// virtio-scsi rather than libvirt's default LSI controller, which current
// guests no longer carry drivers for. USB is switched off unless a disk
// or the tablet needs it, as Nova does when no tablet or USB device is configured.
void add_controllers(pugi::xml_node devices, const DomainSpec& spec, const std::vector<PlannedDisk>& disks) {
  if (uses_bus(disks, "scsi")) {
    pugi::xml_node scsi = child_with(devices, "controller", "type", "scsi");
    set(scsi, "index", "0");
    set(scsi, "model", "virtio-scsi");
  }
  bool usb_tablet = spec.usb_tablet && spec.input_bus == "usb";
  if (!uses_bus(disks, "usb") && !usb_tablet) {
    pugi::xml_node usb = child_with(devices, "controller", "type", "usb");
    set(usb, "index", "0");
    set(usb, "model", "none");
  }
}

std::string lowercase(std::string text) {
  std::transform(text.begin(), text.end(), text.begin(), [](unsigned char c) { return std::tolower(c); });
  return text;
}

void add_interface(pugi::xml_node devices, const NetworkInterface& nic, const DomainSpec& spec) {
  pugi::xml_node node = child_with(devices, "interface", "type", nic.type);
  child_with(node, "mac", "address", lowercase(nic.mac));
  if (nic.type == "bridge") child_with(node, "source", "bridge", nic.bridge);
  if (!nic.tap.empty()) child_with(node, "target", "dev", nic.tap);
  child_with(node, "model", "type", nic.model.empty() ? spec.interface_model : nic.model);
}

void add_console(pugi::xml_node devices, const DomainSpec& spec) {
  pugi::xml_node serial = child_with(devices, "serial", "type", "pty");
  pugi::xml_node log = child_with(serial, "log", "file", spec.console_log);
  set(log, "append", "off");
  pugi::xml_node console = child_with(devices, "console", "type", "pty");
  pugi::xml_node target = child_with(console, "target", "type", "serial");
  set(target, "port", "0");
}

void add_guest_agent(pugi::xml_node devices, const DomainSpec& spec) {
  pugi::xml_node channel = child_with(devices, "channel", "type", "unix");
  pugi::xml_node source = child_with(channel, "source", "mode", "bind");
  set(source, "path", detail::guest_agent_socket_path(spec.name));
  pugi::xml_node target = child_with(channel, "target", "type", "virtio");
  set(target, "name", "org.qemu.guest_agent.0");
}

void add_virtio_devices(pugi::xml_node devices) {
  pugi::xml_node balloon = child_with(devices, "memballoon", "model", "virtio");
  child_with(balloon, "stats", "period", "10");
  pugi::xml_node rng = child_with(devices, "rng", "model", "virtio");
  set(child_with_text(rng, "backend", "/dev/urandom"), "model", "random");
}

void add_devices(pugi::xml_node domain, const DomainSpec& spec, const std::vector<PlannedDisk>& disks) {
  pugi::xml_node devices = domain.append_child("devices");
  for (const PlannedDisk& disk : disks) add_disk(devices, disk);
  add_controllers(devices, spec, disks);
  for (const NetworkInterface& nic : spec.interfaces) add_interface(devices, nic, spec);
  add_console(devices, spec);
  if (spec.guest_agent) add_guest_agent(devices, spec);
  // "none" is written too: it says "no display device" in so many words
  // instead of leaving the guest's display to libvirt's defaults.
  child_with(devices.append_child("video"), "model", "type", spec.video_model);
  if (spec.usb_tablet) set(child_with(devices, "input", "type", "tablet"), "bus", spec.input_bus);
  if (!spec.watchdog_action.empty() && spec.watchdog_action != "disabled") {
    set(child_with(devices, "watchdog", "model", "i6300esb"), "action", spec.watchdog_action);
  }
  add_virtio_devices(devices);
}

}  // namespace

std::string build_domain_xml(const DomainSpec& spec) {
  check_domain_spec(spec);
  std::vector<PlannedDisk> disks = detail::plan_disks(spec);

  pugi::xml_document document;
  pugi::xml_node domain = child_with(document, "domain", "type", spec.domain_type);
  child_with_text(domain, "name", spec.name);
  child_with_text(domain, "uuid", spec.uuid);
  // virsh list --title shows the display name; the name is kiln's own.
  if (!spec.display_name.empty()) child_with_text(domain, "title", spec.display_name);
  add_metadata(domain, spec);
  set(child_with_text(domain, "memory", std::to_string(spec.memory_mb * 1024)), "unit", "KiB");
  child_with_text(domain, "vcpu", std::to_string(spec.vcpus));
  add_sysinfo(domain, spec);
  add_os(domain, spec, disks);
  add_features(domain, spec);
  if (spec.domain_type == "kvm") child_with(domain, "cpu", "mode", "host-model");
  add_clock(domain, spec);
  add_devices(domain, spec, disks);

  std::ostringstream out;
  document.save(out, "  ", pugi::format_indent | pugi::format_no_declaration);
  return out.str();
}

}  // namespace kiln::virt
