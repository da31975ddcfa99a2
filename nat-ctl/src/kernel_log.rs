//! The data path's log lines (aya-log), forwarded to this process's log with drop reasons by
//! name. The programs send a reason's number ("drop: 12"): formatting its name in the kernel
//! made the verifier explore the LAN program twice over at info level and past its limit at
//! debug level (nat-ebpf/src/main.rs, log_drop).

use nat_common::counters::Counter;

/// A `log::Log` for aya-log's EbpfLogger: names the reasons, then hands each line to the
/// process's logger.
pub struct KernelLog;

impl log::Log for KernelLog {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        log::logger().enabled(metadata)
    }

    fn log(&self, record: &log::Record<'_>) {
        let line = name_reasons(&record.args().to_string());
        log::logger().log(
            &log::Record::builder()
                .args(format_args!("{line}"))
                .level(record.level())
                .target(record.target())
                .module_path(record.module_path())
                .file(record.file())
                .line(record.line())
                .build(),
        );
    }

    fn flush(&self) {
        log::logger().flush();
    }
}

/// "drop: 12 ..." and "egress drop: 12" with the reason's name for its number.
pub fn name_reasons(line: &str) -> String {
    for prefix in ["drop: ", "egress drop: "] {
        if let Some(rest) = line.strip_prefix(prefix) {
            let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
            let named = rest[..digits]
                .parse::<usize>()
                .ok()
                .and_then(|n| Counter::ALL.get(n));
            if let Some(reason) = named {
                return format!("{prefix}{}{}", reason.name(), &rest[digits..]);
            }
        }
    }
    line.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_get_their_names_and_other_lines_stay() {
        let n = Counter::DropNoMapping as usize;
        assert_eq!(name_reasons(&format!("drop: {n}")), "drop: drop_no_mapping");
        let full = Counter::DropPortsExhausted as usize;
        assert_eq!(
            name_reasons(&format!("drop: {full} (table or pool exhausted)")),
            "drop: drop_ports_exhausted (table or pool exhausted)"
        );
        assert_eq!(
            name_reasons(&format!("egress drop: {n}")),
            "egress drop: drop_no_mapping"
        );
        assert_eq!(name_reasons("drop: 99999"), "drop: 99999");
        assert_eq!(name_reasons("something else"), "something else");
    }
}
