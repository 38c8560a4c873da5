// kilnd's logging: spdlog's default logger, written to stderr, shaped for
// whoever reads it.
//
// Under systemd (JOURNAL_STREAM names the very stream stderr is, as
// systemd.exec(5) sets it) every line starts with the syslog priority in
// sd-daemon(3) form — `<6>` info, `<4>` warn, `<3>` error, `<2>` critical,
// `<7>` debug and trace — and carries no timestamp, because journald stamps
// each line itself and files it under that priority (`journalctl -p warning`
// then works). Run by hand, or with stderr redirected away from the journal
// by a parent, lines carry an ISO-8601 UTC timestamp and the level instead.
// Either way one event is one line: line breaks inside a message become
// spaces, so a multi-line error cannot forge or split journal entries.
// Callers log `key=value` fields (operation=, instance=, image=) in the message.
#pragma once

namespace kilnd {

// Installs the default logger; level debug when `debug`, else info. Call once,
// before other threads log.
void setup_logging(bool debug);

// True when stderr is the journal stream systemd set up (JOURNAL_STREAM's
// device:inode match stderr's), the test setup_logging uses.
bool stderr_is_journal();

}  // namespace kilnd
