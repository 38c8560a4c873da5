#include "kiln/instance/reconcile.h"

#include <algorithm>
#include <pugixml.hpp>
#include <map>
#include <optional>
#include <set>

#include "backing_chain.h"
#include "kiln/instance/instance_dir.h"
#include "kiln/instance/provision.h"
#include "kiln/rbd/instance_disks.h"
#include "kiln/util/error.h"
#include "kiln/util/failpoint.h"
#include "kiln/util/fs.h"
#include "kiln/util/layout.h"
#include "kiln/util/lock.h"
#include "kiln/util/uuid.h"
#include "kiln/virt/domain_xml.h"
#include "kiln/virt/guest_start.h"
#include "provisioning_marker.h"

namespace kiln::instance {

namespace fs = std::filesystem;

namespace {

std::string joined(const std::vector<std::string>& steps) {
  if (steps.empty()) return "none";
  std::string text;
  for (const auto& step : steps) text += (text.empty() ? "" : ", ") + step;
  return text;
}

// Powers off and undefines the domain a boot that never finished defined.
// Returns "" when done, else why not.
std::string undefine_unfinished(const InstanceDir& directory, virt::Connection& libvirt) {
  try {
    auto domain = libvirt.lookup_by_uuid(directory.uuid());
    if (!domain) return "";
    if (domain->is_active()) domain->destroy();
    KILN_FAILPOINT("reconcile.unfinished.before_undefine");
    domain->undefine();
    KILN_FAILPOINT("reconcile.unfinished.undefined");
    return "";
  } catch (const Error& error) {
    return error.what();
  }
}

void remove_directory(const InstanceDir& directory) {
  std::error_code error;
  fs::remove_all(directory.path(), error);
  if (error) throw_io_error("cannot remove " + directory.path().string(), error.value());
  fsync_directory(directory.path().parent_path());
}

// images_type = rbd: removes the <uuid>_* images of an instance whose boot
// never finished; says what became of them ("" when there were none).
std::string remove_rbd_images(const RbdHost* rbd, const std::string& uuid) {
  if (!rbd) return "";
  try {
    rbd::Pool pool = rbd->cluster->open_pool(rbd->pool);
    std::vector<std::string> removed = rbd::remove_instance_images(pool, uuid);
    return removed.empty() ? "" : "; removed its RBD images " + joined(removed);
  } catch (const Error& error) {
    return std::string("; its RBD images stay (") + error.what() + "): `kilnctl delete " + uuid + "` removes them";
  }
}

// A directory whose marker says a provision ran and no process is still
// running it: a boot that never succeeded, undone as a failed boot is (the
// domain, if libvirt has it, undefined; the directory removed), so that the
// same boot can be retried. A failed boot that could not undo its definition
// left kRollbackPending in the marker; it is finished here the same way.
std::optional<ReconcileFinding> reconcile_half_built(const InstanceDir& directory, const MarkerState& marker,
                                                     bool domain_defined, virt::Connection& libvirt,
                                                     bool dry_run, const RbdHost* rbd) {
  if (marker.in_progress) return std::nullopt;  // a live provision owns it
  std::string steps = "steps done: " + joined(marker.steps);
  bool pending = !marker.rollback_failure.empty() ||
                 std::find(marker.steps.begin(), marker.steps.end(), kRollbackPending) != marker.steps.end();
  std::string kind = pending ? "rollback_pending" : domain_defined ? "half_defined" : "half_built";
  if (!domain_defined) {
    std::string images;
    if (!dry_run) {
      remove_directory(directory);
      images = remove_rbd_images(rbd, directory.uuid());
    }
    return ReconcileFinding{directory.uuid(), kind,
                            (dry_run ? "would remove" : "removed") +
                                std::string(" the directory of a boot that never finished; libvirt has no domain "
                                            "for it (") + steps + ")" + images,
                            !dry_run};
  }
  if (dry_run) {
    return ReconcileFinding{directory.uuid(), kind,
                            "would undefine the domain and remove the directory of a boot that never finished (" +
                                steps + ")",
                            false};
  }
  std::string failure = undefine_unfinished(directory, libvirt);
  if (!failure.empty()) {
    return ReconcileFinding{directory.uuid(), kind,
                            "kept: the domain of a boot that never finished could not be undefined (" + failure +
                                "); the next reconcile tries again",
                            false};
  }
  remove_directory(directory);
  KILN_FAILPOINT("reconcile.unfinished.removed");
  std::string images = remove_rbd_images(rbd, directory.uuid());
  return ReconcileFinding{directory.uuid(), kind,
                          "undefined the domain and removed the directory of a boot that never finished (" + steps +
                              ")" + images,
                          true};
}

// A directory whose deletion a crash cut short: the deletion is finished.
ReconcileFinding finish_deletion(const InstanceDir& directory, virt::Connection& libvirt, bool dry_run,
                                 const RbdHost* rbd) {
  if (dry_run) {
    return {directory.uuid(), "half_deleted", "would finish deleting the instance (a delete was cut short)", false};
  }
  delete_instance(directory.uuid(), directory.path().parent_path(), libvirt, rbd);
  return {directory.uuid(), "half_deleted", "finished deleting the instance (a delete was cut short)", true};
}

// kiln writes a libvirt.xml carrying its metadata element into every
// directory it builds; nova (which writes none since Liberty), an operator or
// another tool does not. A directory without one is not kiln's to recover.
bool made_by_kiln(const InstanceDir& directory) {
  std::error_code error;
  if (!fs::is_regular_file(directory.libvirt_xml(), error)) return false;
  pugi::xml_document xml;
  if (!xml.load_string(read_file(directory.libvirt_xml()).c_str())) return false;
  for (const auto& element : xml.child("domain").child("metadata").children()) {
    for (const auto& attribute : element.attributes()) {
      if (std::string_view(attribute.name()).starts_with("xmlns") &&
          std::string_view(attribute.value()) == virt::kMetadataNamespace) {
        return true;
      }
    }
  }
  return false;
}

ReconcileFinding without_domain(const InstanceDir& directory) {
  if (!made_by_kiln(directory)) {
    return {directory.uuid(), "foreign_directory",
            "kept: not made by kiln (no libvirt.xml with kiln's metadata; nova leaves such directories), "
            "so kiln neither recovers nor removes it; its disks still keep their bases in use",
            false};
  }
  return {directory.uuid(), "directory_without_domain",
          "kept (disks may hold data): re-define it with `kilnctl instance recover " + directory.uuid() +
              "` or remove it with `kilnctl delete " + directory.uuid() + "`",
          false};
}

struct KnownDomains {
  std::set<std::string> all;
  std::set<std::string> kiln;  // marked as kiln's in their metadata
};

KnownDomains known_domains(virt::Connection& libvirt) {
  KnownDomains known;
  for (const auto& domain : libvirt.list_domains()) {
    known.all.insert(domain.uuid());
    if (domain.is_kiln_instance()) known.kiln.insert(domain.uuid());
  }
  return known;
}

// images_type = rbd: the pool's <uuid>_* images whose uuid has neither a
// directory nor a domain, one finding per uuid.
void report_rbd_orphans(const RbdHost& rbd, const std::set<std::string>& known, ReconcileReport& report) {
  std::map<std::string, std::vector<std::string>> orphans;
  rbd::Pool pool = rbd.cluster->open_pool(rbd.pool);
  for (const rbd::ImageInfo& image : pool.list()) {
    auto underscore = image.name.find('_');
    if (underscore == std::string::npos) continue;
    std::string uuid = image.name.substr(0, underscore);
    if (!is_canonical_uuid(uuid) || known.count(uuid) > 0) continue;
    orphans[uuid].push_back(image.name);
  }
  for (const auto& [uuid, images] : orphans) {
    report.findings.push_back({uuid, "rbd_images_without_instance",
                               "kept (they may hold a guest's data): RBD images " + joined(images) + " in pool " +
                                   rbd.pool + " have no directory and no domain; `kilnctl delete " + uuid +
                                   "` removes them",
                               false});
  }
}

// images_type = rbd: a boot that died before publishing its directory left
// only a building directory (which repair_cache removes) and, past its
// marker, the clones it made. They are its own: the boot checked that no
// <uuid>_disk existed before making the directory. Removed here, with the
// instance's lock held so that no live provision loses them, and only for a
// uuid that has neither a directory nor a domain: a later boot of that uuid
// that succeeded owns the images it made. Returns the uuids handled.
std::set<std::string> remove_building_clones(const fs::path& instances_path, const std::set<std::string>& known,
                                             bool dry_run, const RbdHost& rbd, ReconcileReport& report) {
  std::set<std::string> handled;
  std::optional<std::vector<rbd::ImageInfo>> images;  // the pool's, listed once when needed
  std::error_code error;
  for (const auto& entry : fs::directory_iterator(instances_path, error)) {
    auto parsed = layout::parse(layout::Place::kInstancesPath, entry.path().filename().string());
    if (!parsed || parsed->kind != layout::Kind::kBuilding || known.count(parsed->subject) > 0) continue;
    const std::string& uuid = parsed->subject;
    InstanceDir staged = InstanceDir(instances_path, uuid).staged_at(entry.path());
    if (!fs::exists(staged.provisioning_marker(), error)) continue;  // died before any clone
    auto lock = FileLock::try_lock(layout::instance_lock_path(instances_path, uuid));
    if (!lock) continue;  // its provision is running
    if (!images) images = rbd.cluster->open_pool(rbd.pool).list();
    std::vector<std::string> own;
    for (const auto& image : *images) {
      if (image.name.rfind(uuid + "_", 0) == 0) own.push_back(image.name);
    }
    if (own.empty()) continue;
    handled.insert(uuid);
    std::string action = dry_run ? "; would remove its RBD images " + joined(own) : remove_rbd_images(&rbd, uuid);
    report.findings.push_back({uuid, "half_built", "a boot died before its directory was published" + action,
                               action.rfind("; removed", 0) == 0});
  }
  return handled;
}

}  // namespace

ReconcileReport reconcile(const fs::path& instances_path, virt::Connection& libvirt, bool dry_run,
                          const RbdHost* rbd) {
  ReconcileReport report;
  KILN_FAILPOINT("reconcile.begin");
  KnownDomains domains = known_domains(libvirt);
  std::set<std::string> directories;
  std::error_code error;
  for (const auto& entry : fs::directory_iterator(instances_path, error)) {
    std::string name = entry.path().filename().string();
    if (!entry.is_directory(error) || !layout::is_instance_directory_name(name)) continue;
    directories.insert(name);
    InstanceDir directory(instances_path, name);
    bool defined = domains.all.count(name) > 0;
    if (fs::exists(directory.deletion_marker(), error)) {
      report.findings.push_back(finish_deletion(directory, libvirt, dry_run, rbd));
    } else if (auto marker = read_marker(directory.provisioning_marker())) {
      if (auto finding = reconcile_half_built(directory, *marker, defined, libvirt, dry_run, rbd)) {
        report.findings.push_back(*finding);
      }
    } else if (!defined) {
      report.findings.push_back(without_domain(directory));
    }
  }
  for (const auto& uuid : domains.kiln) {
    if (directories.count(uuid) > 0) continue;
    report.findings.push_back({uuid, "domain_without_directory",
                               "kept: libvirt defines a kiln domain whose directory is gone; `kilnctl delete " +
                                   uuid + "` undefines it",
                               false});
  }
  std::set<std::string> seen = directories;
  seen.insert(domains.kiln.begin(), domains.kiln.end());
  if (rbd) {
    std::set<std::string> known = directories;
    known.insert(domains.all.begin(), domains.all.end());
    std::set<std::string> handled = remove_building_clones(instances_path, known, dry_run, *rbd, report);
    known.insert(handled.begin(), handled.end());
    report_rbd_orphans(*rbd, known, report);
  }
  report.instances_seen = seen.size();
  if (!dry_run) report.cache_repairs = cache::repair_cache(instances_path);
  return report;
}

nlohmann::json to_json(const ReconcileReport& report) {
  nlohmann::json findings = nlohmann::json::array();
  for (const auto& finding : report.findings) {
    findings.push_back({{"uuid", finding.uuid}, {"kind", finding.kind}, {"action", finding.action},
                        {"changed", finding.changed}});
  }
  // An empty vector of repairs must still be an array (not null).
  nlohmann::json repairs = nlohmann::json::array();
  for (const auto& repair : report.cache_repairs) repairs.push_back(repair);
  return {{"instances_seen", report.instances_seen}, {"findings", findings}, {"cache_repairs", repairs}};
}

void to_json(nlohmann::json& out, const RecoverResult& result) {
  out = {{"uuid", result.uuid},
         {"domain", {{"name", result.domain_name}, {"state", result.domain_state}}},
         {"already_defined", result.already_defined}};
}

namespace {

[[noreturn]] void broken(const InstanceDir& directory, const std::string& why) {
  throw Error(ErrorCode::kInstanceBroken, "instance " + directory.uuid() + " cannot be recovered: " + why);
}

// Every file the XML attaches must exist; qcow2 disks inside the directory
// must have a whole, safe backing chain.
void check_attached_files(const InstanceDir& directory, const pugi::xml_document& xml,
                          const fs::path& instances_path) {
  for (const auto& node : xml.select_nodes("/domain/devices/disk[@type='file']/source/@file | "
                                           "/domain/os/kernel | /domain/os/initrd")) {
    fs::path file = node.attribute() ? node.attribute().value() : node.node().text().get();
    std::error_code error;
    if (!fs::is_regular_file(file, error)) broken(directory, file.string() + " is missing");
    if (file.parent_path() != directory.path()) continue;
    BackingChain chain = walk_backing_chain(file, instances_path);
    if (!chain.problem.empty()) broken(directory, chain.problem);
  }
}

// Every network disk must be one of this instance's own images in the
// configured pool (<pool>/<uuid>_disk, _disk.local, _disk.swap) and exist:
// a libvirt.xml edited to name another instance's image, another pool or
// another protocol would hand a guest a disk that is not its own.
void check_attached_images(const InstanceDir& directory, const pugi::xml_document& xml, const RbdHost* rbd) {
  std::optional<rbd::Pool> pool;
  for (const auto& node : xml.select_nodes("/domain/devices/disk[@type='network']/source")) {
    std::string protocol = node.node().attribute("protocol").value();
    std::string name = node.node().attribute("name").value();
    if (protocol != "rbd") broken(directory, "libvirt.xml attaches a '" + protocol + "' network disk, not an RBD image");
    if (!rbd) broken(directory, "libvirt.xml attaches RBD image " + name + " but images_type is not rbd here");
    bool own = false;
    for (std::string_view disk : layout::kInstanceDisks) {
      own = own || name == rbd->pool + "/" + rbd::instance_image_name(directory.uuid(), disk);
    }
    if (!own) broken(directory, "libvirt.xml attaches RBD image " + name + ", which is not one of its own in pool " + rbd->pool);
    if (!pool) pool = rbd->cluster->open_pool(rbd->pool);
    if (!pool->image_exists(name.substr(rbd->pool.size() + 1))) broken(directory, "RBD image " + name + " is missing");
  }
}

}  // namespace

RecoverResult recover_instance(const std::string& uuid, const fs::path& instances_path, virt::Connection& libvirt,
                               bool start, const RbdHost* rbd) {
  InstanceDir directory(instances_path, uuid);
  std::error_code error;
  if (!fs::is_directory(directory.path(), error)) {
    throw Error(ErrorCode::kNotFound, "instance " + directory.uuid() + " has no directory under " +
                                          instances_path.string());
  }
  if (auto domain = libvirt.lookup_by_uuid(directory.uuid())) {
    if (start && !domain->is_active()) virt::start_and_confirm(libvirt, *domain, {});
    return {directory.uuid(), domain->name(), domain->state(), true};
  }
  if (read_marker(directory.provisioning_marker())) {
    broken(directory, "it is half-built (a provisioning marker is present); `kilnctl instance reconcile` cleans it");
  }
  if (fs::exists(directory.deletion_marker(), error)) {
    broken(directory, "a delete of it was cut short; `kilnctl instance reconcile` finishes it");
  }
  if (!fs::exists(directory.libvirt_xml(), error)) {
    throw Error(ErrorCode::kNotFound, "instance " + directory.uuid() + " has no libvirt.xml to recover from");
  }
  std::string text = read_file(directory.libvirt_xml());
  pugi::xml_document xml;
  if (!xml.load_string(text.c_str())) broken(directory, "libvirt.xml is not well-formed XML");
  std::string xml_uuid = xml.child("domain").child("uuid").text().get();
  if (!is_canonical_uuid(xml_uuid) || normalize_uuid(xml_uuid) != directory.uuid()) {
    broken(directory, "libvirt.xml names uuid '" + xml_uuid + "', not the directory's");
  }
  check_attached_files(directory, xml, instances_path);
  check_attached_images(directory, xml, rbd);
  KILN_FAILPOINT("recover.before_define");
  virt::Domain domain = libvirt.define(text);
  KILN_FAILPOINT("recover.defined");
  if (start) virt::start_and_confirm(libvirt, domain, {});
  return {directory.uuid(), domain.name(), domain.state(), false};
}

}  // namespace kiln::instance
