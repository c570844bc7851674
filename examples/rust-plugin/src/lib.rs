//! `wordcount`: a receptor work type that counts the lines, words and bytes of its
//! payload, like `wc`. Configure it with
//!
//! ```yaml
//! - wordcount-worktype:
//!     worktype: wc
//! ```
//!
//! and `receptorctl work submit wc -l "some text" -f` prints `1 2 10`.

use std::io::{Read, Write};

use receptor_plugin_sdk::{
    export_plugin, Plugin, PluginError, Progress, Section, StartRequest, WorkHandle, UnitState, WorkType,
    WorkTypeInfo,
};

struct WordCount(WorkTypeInfo);

/// Units finish on their own thread in no time; cancelling has nothing to stop.
struct Counting;

impl WorkHandle for Counting {
    fn cancel(&self) -> Result<(), PluginError> {
        Ok(())
    }
}

impl WorkType for WordCount {
    fn info(&self) -> WorkTypeInfo {
        self.0.clone()
    }

    fn start(
        &self,
        mut req: StartRequest,
        progress: Progress,
    ) -> Result<Box<dyn WorkHandle>, PluginError> {
        progress.report(UnitState::Running, "Counting", None);
        std::thread::spawn(move || {
            let (mut lines, mut words, mut bytes, mut in_word) = (0u64, 0u64, 0u64, false);
            let mut buf = [0u8; 65536];
            let result = loop {
                match req.stdin.read(&mut buf) {
                    Ok(0) => break writeln!(req.stdout, "{lines} {words} {bytes}"),
                    Ok(n) => {
                        for &b in &buf[..n] {
                            lines += u64::from(b == b'\n');
                            let space = b.is_ascii_whitespace();
                            words += u64::from(!space && !in_word);
                            in_word = !space;
                        }
                        bytes += n as u64;
                    }
                    Err(e) => break Err(e),
                }
            };
            match result {
                Ok(()) => {
                    let extra = serde_json::json!({"Lines": lines, "Words": words, "Bytes": bytes});
                    progress.report(UnitState::Succeeded, "Counted", Some(&extra));
                }
                Err(e) => progress.report(UnitState::Failed, &e.to_string(), None),
            }
        });
        Ok(Box::new(Counting))
    }
}

fn plugin() -> Plugin {
    Plugin::new("wordcount", env!("CARGO_PKG_VERSION")).work_type(
        "wordcount-worktype",
        |section: &Section| {
            Ok(Box::new(WordCount(WorkTypeInfo::from_section(
                section,
                Some("wordcount"),
            )?)) as Box<dyn WorkType>)
        },
    )
}

export_plugin!(plugin);
