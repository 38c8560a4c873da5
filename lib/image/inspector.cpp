#include "kiln/image/inspector.h"

#include <algorithm>
#include <array>

#include "inspector_internal.h"

namespace kiln::image {

namespace {

using detail::Reader;
using detail::Refusal;
using detail::Sample;

using Parser = void (*)(Reader&, const Sample&, const InspectorPolicy&, Inspection&);

struct FormatProbe {
  std::string_view format;
  bool (*looks_like)(const Sample&);
  Parser parse;
};

// In the order a refusal for several matches names them.
constexpr std::array kProbes{
    FormatProbe{"qcow2", detail::looks_like_qcow2, detail::parse_qcow2},
    FormatProbe{"qed", detail::looks_like_qed, detail::parse_qed},
    FormatProbe{"vmdk", detail::looks_like_vmdk, detail::parse_vmdk},
    FormatProbe{"vhdx", detail::looks_like_vhdx, detail::parse_vhdx},
    FormatProbe{"vhd", detail::looks_like_vhd, detail::parse_vhd},
    FormatProbe{"vdi", detail::looks_like_vdi, detail::parse_vdi},
    FormatProbe{"luks", detail::looks_like_luks, detail::parse_luks},
    FormatProbe{"iso", detail::looks_like_iso, detail::parse_raw_family},
    FormatProbe{"gpt", detail::looks_like_gpt, detail::parse_raw_family},
    FormatProbe{"mbr", detail::looks_like_mbr, detail::parse_raw_family},
};

bool is_partition_table(std::string_view format) { return format == "gpt" || format == "mbr"; }

Sample take_sample(Reader& reader) {
  Sample sample;
  sample.size = reader.size();
  sample.head = reader.read_up_to(0, detail::kHeadBytes);
  std::uint64_t tail_length = std::min<std::uint64_t>(sample.size, detail::kTailBytes);
  if (sample.head.size() == sample.size) {
    // A small image: its tail is already in the head.
    sample.tail = sample.head.substr(sample.head.size() - tail_length);
  } else {
    sample.tail = reader.read_up_to(sample.size - tail_length, tail_length);
  }
  return sample;
}

// The format the image is taken as. A partition table inside another format
// is guest data (a bootable hybrid iso carries an mbr and a gpt); more than one
// other format is a refusal, and the first of them is parsed.
std::string resolve_format(const std::vector<std::string>& matched, Inspection& inspection) {
  std::vector<std::string> formats;
  for (const auto& format : matched) {
    if (!is_partition_table(format)) formats.push_back(format);
  }
  if (formats.size() > 1) {
    std::string names;
    for (const auto& format : formats) names += (names.empty() ? "" : " and ") + format;
    inspection.refusals.push_back(
        {"multiple_formats",
         "its headers match " + names + " at once, so tools would disagree on what it is",
         ErrorCode::kImageUnsafe});
  }
  if (!formats.empty()) return formats.front();
  if (!matched.empty()) return matched.front();
  return "raw";
}

Parser parser_for(std::string_view format) {
  for (const auto& probe : kProbes) {
    if (probe.format == format) return probe.parse;
  }
  return detail::parse_raw_family;
}

void check_virtual_size(const InspectorPolicy& policy, Inspection& inspection) {
  if (policy.max_virtual_size == 0 || inspection.virtual_size <= policy.max_virtual_size) return;
  inspection.refusals.push_back(
      {"virtual_size_too_large",
       "its virtual size of " + detail::bytes_phrase(inspection.virtual_size) +
           " is above the configured maximum of " + detail::bytes_phrase(policy.max_virtual_size),
       ErrorCode::kImageTooLarge});
}

// How telling a refusal's code is: the first one found in this order names the error.
int severity(ErrorCode code) {
  switch (code) {
    case ErrorCode::kImageFormatMismatch: return 3;
    case ErrorCode::kImageTooLarge: return 2;
    case ErrorCode::kImageMalformed: return 1;
    default: return 0;
  }
}

}  // namespace

bool Inspection::refused_by(std::string_view rule) const {
  return std::any_of(refusals.begin(), refusals.end(),
                     [&](const Finding& finding) { return finding.rule == rule; });
}

Inspection inspect(const ByteSource& source, const InspectorPolicy& policy) {
  Inspection inspection;
  Reader reader(source);
  Sample sample = take_sample(reader);
  for (const auto& probe : kProbes) {
    if (probe.looks_like(sample)) inspection.matched_formats.emplace_back(probe.format);
  }
  inspection.format = resolve_format(inspection.matched_formats, inspection);
  try {
    parser_for(inspection.format)(reader, sample, policy, inspection);
  } catch (const Refusal& refusal) {
    inspection.refusals.push_back(refusal.finding);
  }
  check_virtual_size(policy, inspection);
  inspection.bytes_read = reader.bytes_read();
  return inspection;
}

Inspection inspect_file(const std::filesystem::path& path, const InspectorPolicy& policy) {
  FileSource source(path);
  return inspect(source, policy);
}

bool disk_format_accepts(std::string_view disk_format, std::string_view detected_format) {
  if (disk_format == detected_format) return true;
  // Whole-disk images registered as raw carry partition tables; qemu reads
  // them, and the AMI family, as raw.
  bool raw_family = disk_format == "raw" || disk_format == "ami" || disk_format == "aki" ||
                    disk_format == "ari";
  return raw_family &&
         (detected_format == "raw" || detected_format == "gpt" || detected_format == "mbr");
}

void require_safe(const Inspection& inspection, const std::string& expected_disk_format,
                  const std::string& image_label) {
  std::vector<Finding> findings;
  if (!disk_format_accepts(expected_disk_format, inspection.format)) {
    findings.push_back({"format_mismatch",
                        "its content is " + inspection.format + ", not " +
                            detail::quoted_name(expected_disk_format) + " as registered in Glance",
                        ErrorCode::kImageFormatMismatch});
  }
  findings.insert(findings.end(), inspection.refusals.begin(), inspection.refusals.end());
  if (findings.empty()) return;

  ErrorCode code = findings.front().code;
  std::string reasons;
  for (const auto& finding : findings) {
    if (severity(finding.code) > severity(code)) code = finding.code;
    reasons += (reasons.empty() ? "" : "; ") + finding.sentence + " [" + finding.rule + "]";
  }
  throw Error(code, "image " + image_label + " refused: " + reasons);
}

}  // namespace kiln::image
