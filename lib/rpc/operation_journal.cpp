#include "kiln/rpc/operation_journal.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <spdlog/spdlog.h>

#include <cstring>
#include <unordered_map>

#include "kiln/util/error.h"

namespace kiln::rpc {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

// Only the owner (kilnd) writes it; the group (operators) may read it.
constexpr unsigned kJournalMode = 0640;

// Whether `record` is an operation record at all; anything else on a line
// (bit rot, a fragment, a line an operator typed) is skipped.
bool is_operation_record(const json& record) {
  if (!record.is_object()) return false;
  auto id = record.find("id");
  auto kind = record.find("kind");
  auto state = record.find("state");
  auto seq = record.find("seq");
  return id != record.end() && id->is_string() && id->get_ref<const std::string&>().starts_with("op-") &&
         kind != record.end() && kind->is_string() && state != record.end() && state->is_string() &&
         seq != record.end() && seq->is_number_unsigned();
}

struct Parsed {
  OperationJournal::Contents contents;
  std::uint64_t complete_bytes = 0;  // up to and including the last newline
  std::size_t complete_lines = 0;
};

Parsed parse(const std::string& text) {
  Parsed parsed;
  std::unordered_map<std::string, std::size_t> position;  // id -> index in records
  std::size_t start = 0;
  while (start < text.size()) {
    auto end = text.find('\n', start);
    if (end == std::string::npos) {
      // An append cut short by a crash: never a record, whatever it looks like.
      parsed.contents.torn_tail = true;
      break;
    }
    std::string_view line(text.data() + start, end - start);
    start = end + 1;
    parsed.complete_bytes = start;
    ++parsed.complete_lines;
    if (line.find_first_not_of(" \t\r") == std::string_view::npos) continue;
    json record = json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (!is_operation_record(record)) {
      ++parsed.contents.skipped_lines;
      continue;
    }
    std::string id = record["id"].get<std::string>();
    auto [at, inserted] = position.emplace(id, parsed.contents.records.size());
    if (inserted) {
      parsed.contents.records.push_back(std::move(record));
    } else {
      parsed.contents.records[at->second] = std::move(record);
    }
  }
  return parsed;
}

std::string line_of(const json& record) {
  // Invalid UTF-8 (an error message quoting bytes from a peer) is replaced,
  // never a reason to lose the record.
  return record.dump(-1, ' ', false, json::error_handler_t::replace) + "\n";
}

}  // namespace

OperationJournal::OperationJournal(fs::path path) : path_(std::move(path)) {
  std::error_code error;
  fs::create_directories(path_.parent_path(), error);
  if (error) throw_io_error("cannot create " + path_.parent_path().string(), error.value());
  std::string text;
  if (fs::exists(fs::symlink_status(path_, error))) text = read_file(path_);
  auto parsed = parse(text);
  contents_ = std::move(parsed.contents);
  size_ = parsed.complete_bytes;
  lines_ = parsed.complete_lines;
  for (const auto& record : contents_.records) live_.insert(record["id"].get<std::string>());
  open_for_append();
  if (text.size() != size_ && ::ftruncate(fd_.get(), static_cast<off_t>(size_)) != 0) {
    throw_io_error("cannot cut the torn last line of " + path_.string(), errno);
  }
}

void OperationJournal::open_for_append() {
  fd_ = open_file(path_, O_WRONLY | O_APPEND | O_CREAT | O_NOFOLLOW, kJournalMode);
}

OperationJournal::Contents OperationJournal::take_contents() {
  std::lock_guard lock(mutex_);
  return std::move(contents_);
}

void OperationJournal::append(const json& record) {
  std::string line = line_of(record);
  std::string id = record.at("id").get<std::string>();
  std::unique_lock lock(mutex_);
  try {
    write_all(fd_.get(), line, path_);
  } catch (const Error&) {
    // A half-written line would swallow the next one into a garbled line.
    if (::ftruncate(fd_.get(), static_cast<off_t>(size_)) != 0) {
      spdlog::error("operations journal: cannot cut a half-written line off {}: {}", path_.string(),
                    std::strerror(errno));
    }
    throw;
  }
  size_ += line.size();
  ++lines_;
  live_.insert(id);
  std::uint64_t mine = ++written_;
  // One fdatasync makes every line written before it durable: whoever finds
  // none running syncs for all that are waiting.
  while (synced_ < mine) {
    if (syncing_) {
      synced_changed_.wait(lock);
      continue;
    }
    syncing_ = true;
    std::uint64_t target = written_;
    int fd = fd_.get();
    lock.unlock();
    int result = ::fdatasync(fd);
    int saved_errno = errno;
    lock.lock();
    syncing_ = false;
    synced_changed_.notify_all();
    if (result != 0) throw_io_error("cannot fdatasync " + path_.string(), saved_errno);
    synced_ = std::max(synced_, target);
  }
  if (lines_ > 2 * live_.size() + kCompactionSlack) {
    try {
      compact_locked(lock);
    } catch (const Error& error) {
      // The record is durable; the file is only longer than it should be.
      spdlog::warn("operations journal: compaction of {} failed, will retry: {}", path_.string(), error.what());
    }
  }
}

void OperationJournal::forget(const std::string& id) {
  std::lock_guard lock(mutex_);
  live_.erase(id);
}

void OperationJournal::compact() {
  std::unique_lock lock(mutex_);
  compact_locked(lock);
}

void OperationJournal::compact_locked(std::unique_lock<std::mutex>& lock) {
  // The descriptor is replaced below; no fdatasync may still be using it.
  synced_changed_.wait(lock, [this] { return !syncing_; });
  auto parsed = parse(read_file(path_));
  std::string text;
  std::size_t kept = 0;
  for (const auto& record : parsed.contents.records) {
    if (!live_.count(record["id"].get<std::string>())) continue;
    text += line_of(record);
    ++kept;
  }
  replace_locked(lock, text, kept);
}

void OperationJournal::rewrite(const std::vector<json>& records) {
  std::unique_lock lock(mutex_);
  synced_changed_.wait(lock, [this] { return !syncing_; });
  std::string text;
  live_.clear();
  for (const auto& record : records) {
    text += line_of(record);
    live_.insert(record.at("id").get<std::string>());
  }
  replace_locked(lock, text, records.size());
}

void OperationJournal::replace_locked(std::unique_lock<std::mutex>&, const std::string& text, std::size_t lines) {
  atomic_write_file(path_, text, kJournalMode);
  open_for_append();
  size_ = text.size();
  lines_ = lines;
  ++compactions_;
  synced_ = written_;  // the new file holds every line written, fsync'd
  synced_changed_.notify_all();
}

std::size_t OperationJournal::lines() const {
  std::lock_guard lock(mutex_);
  return lines_;
}

std::size_t OperationJournal::compactions() const {
  std::lock_guard lock(mutex_);
  return compactions_;
}

}  // namespace kiln::rpc
