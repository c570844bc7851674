//! A unit's `status` file and the status objects of control replies.
//!
//! Go receptor keeps one JSON object per unit in `<unitdir>/status`:
//! `{"State":2,"Detail":"exit status 0","StdoutSize":12,"WorkType":"cat","ExtraData":null}`
//! followed by a newline. Tools written for it read that file, so it is written here with
//! the same field order and Go's JSON escaping, and replaced atomically (write a temporary
//! file, swap it with `status`; for final states fsync the file before the swap and the
//! folder after it) so that a crash never leaves half of it (see [`write_status_file`]).
//!
//! `ExtraData` is a Go struct in Go receptor (`{"Pid":..,"Params":..}` for command units),
//! so its fields come out in declaration order, not sorted: [`GoExtraData`] restores that
//! order for the shapes Go receptor writes.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use serde::ser::SerializeMap;
use serde::{Deserialize, Serialize, Serializer};
use serde_json::Value;

use super::worktype::UnitState;

/// Name of the status file inside a unit folder.
pub const STATUS_FILE: &str = "status";
/// Temporary file the status is written to before it is renamed over [`STATUS_FILE`].
pub const STATUS_TEMP_FILE: &str = "status.tmp";

impl UnitState {
    /// The number Go receptor stores for this state.
    pub fn code(self) -> i64 {
        match self {
            UnitState::Pending => 0,
            UnitState::Running => 1,
            UnitState::Succeeded => 2,
            UnitState::Failed => 3,
            UnitState::Canceled => 4,
        }
    }

    /// The state stored as `code`, if it is one of the five known states.
    pub fn from_code(code: i64) -> Option<UnitState> {
        match code {
            0 => Some(UnitState::Pending),
            1 => Some(UnitState::Running),
            2 => Some(UnitState::Succeeded),
            3 => Some(UnitState::Failed),
            4 => Some(UnitState::Canceled),
            _ => None,
        }
    }

    /// Whether the unit has reached an end: Succeeded, Failed or Canceled.
    ///
    /// (Go's `IsComplete` leaves Canceled out; that is why its result streams of cancelled
    /// units never end. Here a cancelled unit is finished too.)
    pub fn is_final(self) -> bool {
        matches!(
            self,
            UnitState::Succeeded | UnitState::Failed | UnitState::Canceled
        )
    }
}

/// Go receptor's `StateName` for a state number (`Unknown: 7` for others).
pub fn state_name(code: i64) -> String {
    match UnitState::from_code(code) {
        Some(UnitState::Pending) => "Pending".to_owned(),
        Some(UnitState::Running) => "Running".to_owned(),
        Some(UnitState::Succeeded) => "Succeeded".to_owned(),
        Some(UnitState::Failed) => "Failed".to_owned(),
        Some(UnitState::Canceled) => "Canceled".to_owned(),
        None => format!("Unknown: {code}"),
    }
}

/// The content of a unit's `status` file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UnitStatus {
    /// State number (see [`UnitState::code`]); kept as a number so that files with an
    /// unknown state survive a load and save.
    #[serde(rename = "State")]
    pub state: i64,
    /// Human-readable detail.
    #[serde(rename = "Detail")]
    pub detail: String,
    /// Bytes of output the unit has produced.
    #[serde(rename = "StdoutSize")]
    pub stdout_size: i64,
    /// Name of the unit's work type.
    #[serde(rename = "WorkType")]
    pub work_type: String,
    /// Work-type specific data (`null` when absent).
    #[serde(rename = "ExtraData", serialize_with = "serialize_extra")]
    pub extra: Option<Value>,
}

impl UnitStatus {
    /// A fresh status.
    pub fn new(state: UnitState, detail: impl Into<String>, work_type: impl Into<String>) -> Self {
        UnitStatus {
            state: state.code(),
            detail: detail.into(),
            stdout_size: 0,
            work_type: work_type.into(),
            extra: None,
        }
    }

    /// The state, if it is a known one.
    pub fn unit_state(&self) -> Option<UnitState> {
        UnitState::from_code(self.state)
    }

    /// Whether the unit is finished (Succeeded, Failed or Canceled).
    pub fn is_final(&self) -> bool {
        self.unit_state().is_some_and(UnitState::is_final)
    }

    /// Sets state and detail.
    pub fn set(&mut self, state: UnitState, detail: impl Into<String>) {
        self.state = state.code();
        self.detail = detail.into();
    }

    /// The status file bytes: Go JSON plus a newline.
    pub fn to_file_bytes(&self) -> Vec<u8> {
        // Serialising a struct of strings, numbers and JSON values cannot fail.
        let mut out = receptor_proto::gojson::to_vec(self).unwrap_or_default();
        out.push(b'\n');
        out
    }

    /// Parses status file bytes.
    pub fn from_file_bytes(bytes: &[u8]) -> Result<UnitStatus, serde_json::Error> {
        serde_json::from_slice(bytes)
    }

    /// The object `work status` and `work list` reply with. `extra_override` replaces
    /// `ExtraData` (Go shows `"Unknown WorkType"` for units of unconfigured types).
    pub fn reply<'a>(&'a self, extra_override: Option<&'a Value>) -> StatusReply<'a> {
        StatusReply {
            detail: &self.detail,
            extra: GoExtraData(extra_override.or(self.extra.as_ref())),
            state: self.state,
            state_name: state_name(self.state),
            stdout_size: self.stdout_size,
            work_type: &self.work_type,
        }
    }
}

/// A status as `work status` shows it: the file's fields plus `StateName`, keys sorted
/// (Go builds that reply as a map).
#[derive(Debug, Serialize)]
pub struct StatusReply<'a> {
    #[serde(rename = "Detail")]
    detail: &'a str,
    #[serde(rename = "ExtraData")]
    extra: GoExtraData<'a>,
    #[serde(rename = "State")]
    state: i64,
    #[serde(rename = "StateName")]
    state_name: String,
    #[serde(rename = "StdoutSize")]
    stdout_size: i64,
    #[serde(rename = "WorkType")]
    work_type: &'a str,
}

/// `ExtraData` serialised with the field order of the Go struct it came from.
#[derive(Debug, Clone, Copy)]
pub struct GoExtraData<'a>(pub Option<&'a Value>);

/// Field orders of the Go structs stored as `ExtraData`.
const GO_STRUCT_ORDERS: &[&[&str]] = &[
    &["Pid", "Params"],
    &[
        "RemoteNode",
        "RemoteWorkType",
        "RemoteParams",
        "RemoteUnitID",
        "RemoteStarted",
        "LocalCancelled",
        "LocalReleased",
        "SignWork",
        "TLSClient",
        "Expiration",
    ],
    &[
        "Image",
        "Command",
        "Params",
        "KubeNamespace",
        "KubeConfig",
        "KubePod",
        "PodName",
    ],
];

impl Serialize for GoExtraData<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let Some(Value::Object(map)) = self.0 else {
            return self.0.serialize(serializer);
        };
        let order = GO_STRUCT_ORDERS
            .iter()
            .find(|order| map.keys().all(|k| order.contains(&k.as_str())));
        let Some(order) = order else {
            return map.serialize(serializer);
        };
        let mut out = serializer.serialize_map(Some(map.len()))?;
        for key in order.iter() {
            if let Some(value) = map.get(*key) {
                out.serialize_entry(key, value)?;
            }
        }
        out.end()
    }
}

fn serialize_extra<S: Serializer>(extra: &Option<Value>, serializer: S) -> Result<S::Ok, S::Error> {
    GoExtraData(extra.as_ref()).serialize(serializer)
}

/// Creates `path` (mode 0600) for writing, failing if it exists.
pub fn create_private_file(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
}

/// Replaces `<dir>/status` with `status` atomically: a reader, or the node after a
/// crash, sees the old file or the new one, never a mix.
///
/// The new content is written to `status.tmp` and the two names are swapped
/// (`renameat2(RENAME_EXCHANGE)`), so `status.tmp` then holds the previous status and is
/// rewritten by the next update. No inode is freed and, after the second write, none is
/// created: on ext4, creating a file costs time in proportion to the inodes freed nearby in
/// the last seconds (without a journal it skips every recently deleted one), so a unit's
/// status no longer slows down every file creation that follows. The price: a reader that
/// opened `status` keeps a complete copy until the second update after its `open`, not
/// forever (read it at once, as Go receptor's own readers do under their lock). The first
/// write of a folder (no `status` yet), and file systems without the swap, use a plain
/// `rename`.
///
/// With `durable` the new content is also on disk when this returns (the temporary file
/// is fsynced before the swap and the folder after it), so it survives a power loss.
/// The store asks for that for final states (and the results are flushed before them).
/// Passing states skip the two fsyncs (about 10 ms each on a common disk): the swap
/// alone is atomic against a crash of the node, and a power loss ends the unit's
/// processes anyway, so such a unit is failed at restart whichever passing state it had.
pub fn write_status_file(dir: &Path, status: &UnitStatus, durable: bool) -> io::Result<()> {
    let temp = dir.join(STATUS_TEMP_FILE);
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&temp)?;
    file.write_all(&status.to_file_bytes())?;
    if durable {
        file.sync_all()?;
    }
    drop(file);
    let target = dir.join(STATUS_FILE);
    match exchange(&temp, &target) {
        Ok(()) => {}
        // No `status` yet, or a file system that cannot swap names.
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::ENOENT | libc::EINVAL | libc::ENOSYS | libc::EOPNOTSUPP)
            ) =>
        {
            fs::rename(&temp, &target)?
        }
        Err(e) => return Err(e),
    }
    if durable {
        sync_dir(dir)?;
    }
    Ok(())
}

/// Swaps the names `a` and `b` atomically (both must exist).
fn exchange(a: &Path, b: &Path) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let cstr = |p: &Path| {
        std::ffi::CString::new(p.as_os_str().as_bytes())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL byte in path"))
    };
    let (a, b) = (cstr(a)?, cstr(b)?);
    // SAFETY: two NUL-terminated paths that live across the call; AT_FDCWD resolves them
    // as given (the callers pass absolute or cwd-relative paths).
    let r = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            a.as_ptr(),
            libc::AT_FDCWD,
            b.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Why a status file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum StatusFileError {
    /// The file could not be read.
    #[error(transparent)]
    Io(#[from] io::Error),
    /// The file is not a status object.
    #[error(transparent)]
    Json(#[from] serde_json::Error),
}

/// Reads and parses `<dir>/status`.
pub fn read_status_file(dir: &Path) -> Result<UnitStatus, StatusFileError> {
    let bytes = fs::read(dir.join(STATUS_FILE))?;
    Ok(UnitStatus::from_file_bytes(&bytes)?)
}

/// Flushes a folder's entries (new, renamed and removed names) to disk.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn status_file_matches_go() {
        let mut s = UnitStatus::new(UnitState::Succeeded, "exit status 0", "cat");
        s.stdout_size = 12;
        assert_eq!(
            s.to_file_bytes(),
            b"{\"State\":2,\"Detail\":\"exit status 0\",\"StdoutSize\":12,\"WorkType\":\"cat\",\"ExtraData\":null}\n"
        );
        s.set(UnitState::Running, "Running: PID 7369");
        s.extra = Some(json!({"Pid": 7360, "Params": "300"}));
        assert_eq!(
            String::from_utf8_lossy(&s.to_file_bytes()),
            "{\"State\":1,\"Detail\":\"Running: PID 7369\",\"StdoutSize\":12,\"WorkType\":\"cat\",\"ExtraData\":{\"Pid\":7360,\"Params\":\"300\"}}\n"
        );
        assert_eq!(
            UnitStatus::from_file_bytes(&s.to_file_bytes()).ok(),
            Some(s)
        );
    }

    #[test]
    fn reply_is_sorted_with_state_name() {
        let mut s = UnitStatus::new(UnitState::Running, "Running: PID 7369", "sleeper");
        s.extra = Some(json!({"Pid": 7360, "Params": "300"}));
        let text = receptor_proto::gojson::to_string(&s.reply(None)).unwrap_or_default();
        assert_eq!(
            text,
            r#"{"Detail":"Running: PID 7369","ExtraData":{"Pid":7360,"Params":"300"},"State":1,"StateName":"Running","StdoutSize":0,"WorkType":"sleeper"}"#
        );
        let unknown = json!("Unknown WorkType");
        let text = receptor_proto::gojson::to_string(&s.reply(Some(&unknown))).unwrap_or_default();
        assert!(text.contains(r#""ExtraData":"Unknown WorkType""#), "{text}");
    }

    #[test]
    fn remote_extra_data_keeps_go_order() {
        let extra = json!({"RemoteNode":"bar","RemoteWorkType":"upper","RemoteParams":{"b":"<","a":"x"},
            "RemoteUnitID":"foo1","RemoteStarted":true,"LocalCancelled":false,"LocalReleased":false,
            "SignWork":false,"TLSClient":"","Expiration":"0001-01-01T00:00:00Z"});
        let text =
            receptor_proto::gojson::to_string(&GoExtraData(Some(&extra))).unwrap_or_default();
        assert_eq!(
            text,
            r#"{"RemoteNode":"bar","RemoteWorkType":"upper","RemoteParams":{"a":"x","b":"\u003c"},"RemoteUnitID":"foo1","RemoteStarted":true,"LocalCancelled":false,"LocalReleased":false,"SignWork":false,"TLSClient":"","Expiration":"0001-01-01T00:00:00Z"}"#
        );
        let other = json!({"z": 1, "a": 2});
        let text =
            receptor_proto::gojson::to_string(&GoExtraData(Some(&other))).unwrap_or_default();
        assert_eq!(text, r#"{"a":2,"z":1}"#);
    }

    #[test]
    fn state_names() {
        assert_eq!(state_name(4), "Canceled");
        assert_eq!(state_name(7), "Unknown: 7");
        assert!(!UnitState::Running.is_final());
        assert!(UnitState::Canceled.is_final());
    }
}
