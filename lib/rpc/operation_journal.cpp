#include "kiln/rpc/operation_journal.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <spdlog/spdlog.h>

#include <algorithm>
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
  std::vector<std::pair<std::uint64_t, std::uint64_t>> lines;  // offset and length of each record's latest line
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
    std::pair<std::uint64_t, std::uint64_t> where{start, end + 1 - start};
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
      parsed.lines.push_back(where);
    } else {
      parsed.contents.records[at->second] = std::move(record);
      parsed.lines[at->second] = where;
    }
  }
  return parsed;
}

// Writes a new journal file in chunks: <path>.tmp, fsync'd, renamed over the
// path by publish(); removed unless published.
class NewJournalFile {
 public:
  explicit NewJournalFile(const fs::path& path) : path_(path), temporary_(layout::atomic_temporary_path(path)) {
    // A leftover (a crash during a compaction) or a planted link is unlinked, never followed.
    if (::unlink(temporary_.path().c_str()) != 0 && errno != ENOENT) {
      throw_io_error("cannot remove " + temporary_.path().string(), errno);
    }
    fd_ = open_file(temporary_.path(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW, 0640);
  }
  // Returns the offset the line starts at.
  std::uint64_t add(std::string_view line) {
    std::uint64_t offset = size_;
    buffer_.append(line);
    size_ += line.size();
    if (buffer_.size() >= 65536) flush();
    return offset;
  }
  std::uint64_t size() const { return size_; }
  void publish() {
    flush();
    fsync_file(fd_.get(), temporary_.path());
    fd_ = UniqueFd();
    publish_file(temporary_.path(), path_);
    temporary_.keep();
  }

 private:
  void flush() {
    write_all(fd_.get(), buffer_, temporary_.path());
    buffer_.clear();
  }
  fs::path path_;
  TemporaryPath temporary_;
  UniqueFd fd_;
  std::string buffer_;
  std::uint64_t size_ = 0;
};

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
  for (std::size_t i = 0; i < contents_.records.size(); ++i) {
    live_[contents_.records[i]["id"].get<std::string>()] = Line{next_order_++, parsed.lines[i].first,
                                                                parsed.lines[i].second};
  }
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
  auto [entry, inserted] = live_.try_emplace(id);
  if (inserted) entry->second.order = next_order_++;
  entry->second.offset = size_;
  entry->second.length = line.size();
  size_ += line.size();
  ++lines_;
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
  std::vector<std::pair<Line, Line*>> kept;  // where the line is now, and the entry to update
  kept.reserve(live_.size());
  for (auto& [id, line] : live_) kept.emplace_back(line, &line);
  std::sort(kept.begin(), kept.end(), [](const auto& a, const auto& b) { return a.first.order < b.first.order; });
  UniqueFd old = open_file(path_, O_RDONLY);
  NewJournalFile file(path_);
  std::vector<std::uint64_t> offsets;
  offsets.reserve(kept.size());
  std::string line;
  for (const auto& [where, entry] : kept) {
    line.resize(where.length);
    std::uint64_t done = 0;
    while (done < where.length) {
      ssize_t n = ::pread(old.get(), line.data() + done, where.length - done, static_cast<off_t>(where.offset + done));
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) throw_io_error("cannot read " + path_.string(), errno);
      if (n == 0) throw Error(ErrorCode::kIoError, path_.string() + " is shorter than the lines it was given");
      done += static_cast<std::uint64_t>(n);
    }
    offsets.push_back(file.add(line));
  }
  file.publish();
  for (std::size_t i = 0; i < kept.size(); ++i) kept[i].second->offset = offsets[i];
  open_for_append();
  size_ = file.size();
  lines_ = kept.size();
  ++compactions_;
  synced_ = written_;  // the new file holds every line written, fsync'd
  synced_changed_.notify_all();
}

void OperationJournal::rewrite(const std::vector<json>& records) {
  std::unique_lock lock(mutex_);
  synced_changed_.wait(lock, [this] { return !syncing_; });
  NewJournalFile file(path_);
  std::unordered_map<std::string, Line> live;
  std::uint64_t order = 0;
  for (const auto& record : records) {
    std::string line = line_of(record);
    std::uint64_t offset = file.add(line);
    live[record.at("id").get<std::string>()] = Line{order++, offset, line.size()};
  }
  file.publish();
  live_ = std::move(live);
  next_order_ = order;
  open_for_append();
  size_ = file.size();
  lines_ = records.size();
  ++compactions_;
  synced_ = written_;
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
