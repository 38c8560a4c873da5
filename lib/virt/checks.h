// Private to lib/virt: the rules and the wording of refusals shared by the
// spec checks, the image properties and the XML builder, so that all three
// agree on what is allowed and name it the same way.
#pragma once

#include <span>
#include <string>
#include <string_view>

namespace kiln::virt::detail {

// Throws kiln::Error kInvalidArgument with `sentence`.
[[noreturn]] void refuse(const std::string& sentence);

// `value` in single quotes for a message: non-printable bytes as \xNN, cut
// after 64 characters, so an image's property cannot flood or garble a log.
std::string quoted(std::string_view value);

// "virtio, scsi, sata, ide, usb"
std::string listing(std::span<const std::string_view> allowed);

bool is_one_of(std::string_view value, std::span<const std::string_view> allowed);

// Refuses "<what> '<value>' is not supported; allowed values are <listing>"
// unless `value` is one of `allowed`.
void require_one_of(const std::string& what, std::string_view value,
                    std::span<const std::string_view> allowed);

// "pc", "q35", "pc-i440fx-<version>", "pc-q35-<version>"; the version is 1 to
// 32 of [A-Za-z0-9._-] (QEMU's "7.2", a distribution's "rhel9.2.0").
bool is_supported_machine_type(std::string_view machine_type);
inline constexpr const char* kMachineTypeListing = "pc, q35, pc-i440fx-<version>, pc-q35-<version>";

// Refuses a kernel command line that is not printable ASCII or longer than
// x86 Linux's COMMAND_LINE_SIZE (2048 bytes).
void require_command_line(const std::string& what, std::string_view command_line);

// Where Nova puts the guest agent's socket, which operators' tools expect.
std::string guest_agent_socket_path(const std::string& domain_name);

}  // namespace kiln::virt::detail
