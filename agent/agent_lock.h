// AgentLock — one kilnd per instances_path.
//
// An AgentLock holds an exclusive flock(2) on a lock file for as long as the
// object lives, and writes the holder's pid into the file so that a second
// agent can say who is in the way. flock belongs to the open file
// description, so a second AgentLock on the same file fails in the same
// process as well as in another one, and nothing else opening or closing the
// file can drop the lock by accident (as it would with POSIX record locks).
// The kernel releases the lock when the descriptor closes, including when
// the process dies: a crashed kilnd never leaves a stale lock behind. The
// file itself is never deleted (deleting it would let two agents lock two
// different inodes). Not copyable; movable.
#pragma once

#include <filesystem>

#include "kiln/util/fs.h"

namespace kilnd {

class AgentLock {
 public:
  // Creates `lock_file`'s directory and the file if needed, takes the lock
  // without waiting and records this process's pid in the file.
  // Throws kiln::Error kAlreadyRunning when another holder has it:
  //   "<lock_file> is held by kilnd pid N: another agent uses this instances_path"
  // (pid "unknown" when the holder has not written it yet), and kLockFailed
  // when the file cannot be created, opened or locked for any other reason.
  explicit AgentLock(const std::filesystem::path& lock_file);

  AgentLock(AgentLock&&) noexcept = default;
  AgentLock& operator=(AgentLock&&) noexcept = default;
  AgentLock(const AgentLock&) = delete;
  AgentLock& operator=(const AgentLock&) = delete;
  // Empties the pid record, then closing the descriptor releases the lock.
  ~AgentLock();

 private:
  kiln::UniqueFd fd_;
};

}  // namespace kilnd
