//! Self-describing sections (ABI 1.2): what a plugin tells the host about each section it
//! claims, so that `--help`, command-line flags, the version-2 map form and type checks
//! need no change in the core for a new plugin.

use crate::abi;

/// The type of a field, as the host checks and converts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldType {
    /// A string.
    String,
    /// An integer.
    Int,
    /// A boolean (YAML 1.1 forms such as `yes` accepted).
    Bool,
    /// A duration (`1m30s`, `250ms`; a bare number is seconds).
    Duration,
    /// A list of strings (comma-separated on the command line).
    List,
    /// A number.
    Float,
    /// Any value, passed on unchecked.
    Any,
}

impl FieldType {
    /// The ABI's `FIELD_*` code.
    pub fn to_abi(self) -> u32 {
        match self {
            FieldType::String => abi::FIELD_STRING,
            FieldType::Int => abi::FIELD_INT,
            FieldType::Bool => abi::FIELD_BOOL,
            FieldType::Duration => abi::FIELD_DURATION,
            FieldType::List => abi::FIELD_LIST,
            FieldType::Float => abi::FIELD_FLOAT,
            FieldType::Any => abi::FIELD_ANY,
        }
    }

    /// The type of an ABI `FIELD_*` code (an unknown code, from a newer plugin, is
    /// [`FieldType::Any`]: not checked).
    pub fn from_abi(code: u32) -> FieldType {
        match code {
            abi::FIELD_STRING => FieldType::String,
            abi::FIELD_INT => FieldType::Int,
            abi::FIELD_BOOL => FieldType::Bool,
            abi::FIELD_DURATION => FieldType::Duration,
            abi::FIELD_LIST => FieldType::List,
            abi::FIELD_FLOAT => FieldType::Float,
            _ => FieldType::Any,
        }
    }

    /// The name shown in `--help` and in type errors.
    pub fn noun(self) -> &'static str {
        match self {
            FieldType::String => "string",
            FieldType::Int => "integer",
            FieldType::Bool => "boolean",
            FieldType::Duration => "duration",
            FieldType::List => "list of strings",
            FieldType::Float => "number",
            FieldType::Any => "value",
        }
    }
}

/// One field of a section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    /// The key, lower case.
    pub name: String,
    /// Its type.
    pub field_type: FieldType,
    /// Whether it must be given.
    pub required: bool,
    /// The default shown in `--help`, if any.
    pub default: Option<String>,
    /// One line of help.
    pub help: String,
}

impl Field {
    /// An optional field without a default.
    pub fn new(name: &str, field_type: FieldType, help: &str) -> Field {
        Field {
            name: name.to_ascii_lowercase(),
            field_type,
            required: false,
            default: None,
            help: help.to_owned(),
        }
    }

    /// Marks the field required.
    pub fn required(mut self) -> Field {
        self.required = true;
        self
    }

    /// Sets the default shown in `--help`.
    pub fn default(mut self, value: &str) -> Field {
        self.default = Some(value.to_owned());
        self
    }
}

/// The description of one section kind.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SectionDesc {
    /// One line of help.
    pub help: String,
    /// Its fields; none means "not described: any keys accepted".
    pub fields: Vec<Field>,
    /// The field a bare command-line value sets (`--kind value`).
    pub bare_field: Option<String>,
    /// The key of its map in the version-2 form.
    pub v2_key: Option<String>,
    /// The backend runs TLS itself ([`abi::CLAIM_FLAG_OWN_TLS`]).
    pub own_tls: bool,
}

impl SectionDesc {
    /// A description with one line of help and no field yet.
    pub fn new(help: &str) -> SectionDesc {
        SectionDesc {
            help: help.to_owned(),
            ..SectionDesc::default()
        }
    }

    /// Adds a field.
    pub fn field(mut self, field: Field) -> SectionDesc {
        self.fields.push(field);
        self
    }

    /// Adds several fields.
    pub fn fields(mut self, fields: impl IntoIterator<Item = Field>) -> SectionDesc {
        self.fields.extend(fields);
        self
    }

    /// Sets the field a bare command-line value sets.
    pub fn bare_field(mut self, name: &str) -> SectionDesc {
        self.bare_field = Some(name.to_ascii_lowercase());
        self
    }

    /// Sets the key of the section's map in the version-2 form.
    pub fn v2_key(mut self, key: &str) -> SectionDesc {
        self.v2_key = Some(key.to_ascii_lowercase());
        self
    }

    /// Declares that the backend runs TLS itself.
    pub fn own_tls(mut self) -> SectionDesc {
        self.own_tls = true;
        self
    }

    /// The `CLAIM_FLAG_*` bits.
    pub fn flags(&self) -> u32 {
        if self.own_tls {
            abi::CLAIM_FLAG_OWN_TLS
        } else {
            0
        }
    }
}

/// Descriptions of the keys the core reads on every backend section
/// ([`crate::CORE_BACKEND_KEYS`]), for a backend plugin to list with its own fields so
/// that `--help` shows them with the section (the node accepts them on every backend
/// section whether listed or not).
pub mod backend_keys {
    use super::{Field, FieldType};

    /// `cost`: the connection's cost (default 1.0).
    pub fn cost() -> Field {
        Field::new("cost", FieldType::Float, "Connection cost (weight)").default("1.0")
    }

    /// `nodecost`: per-node costs (a listener's).
    pub fn nodecost() -> Field {
        Field::new(
            "nodecost",
            FieldType::Any,
            "Per-node costs (map of node ID to cost)",
        )
    }

    /// `allowedpeers`: the node IDs allowed on the connection.
    pub fn allowedpeers() -> Field {
        Field::new(
            "allowedpeers",
            FieldType::List,
            "Node IDs of the peers allowed on this connection",
        )
    }

    /// `tls` of a listener: the name of a `tls-server` configuration.
    pub fn tls_server() -> Field {
        Field::new(
            "tls",
            FieldType::String,
            "Name of a tls-server configuration",
        )
    }

    /// `tls` of a dialer: the name of a `tls-client` configuration.
    pub fn tls_client() -> Field {
        Field::new(
            "tls",
            FieldType::String,
            "Name of a tls-client configuration",
        )
    }

    /// `redial`: whether a dialer redials when its connection is lost (default true).
    pub fn redial() -> Field {
        Field::new(
            "redial",
            FieldType::Bool,
            "Redial when the connection is lost",
        )
        .default("true")
    }

    /// `bindaddr`: the local address a listener binds (default 0.0.0.0).
    pub fn bindaddr() -> Field {
        Field::new("bindaddr", FieldType::String, "Local address to bind to").default("0.0.0.0")
    }
}

/// Descriptions of the keys every work-type section may have (`worktype`,
/// `verifysignature`, `allowruntimeparams`, read by
/// [`crate::WorkTypeInfo::from_section`]).
pub mod work_type_keys {
    use super::{Field, FieldType};

    /// `worktype`: the name clients submit to; required when there is no default.
    pub fn worktype(default: Option<&str>) -> Field {
        let field = Field::new("worktype", FieldType::String, "Name of the work type");
        match default {
            Some(d) => field.default(d),
            None => field.required(),
        }
    }

    /// `verifysignature`: submissions must be signed (default false).
    pub fn verifysignature() -> Field {
        Field::new(
            "verifysignature",
            FieldType::Bool,
            "Require signed work submissions",
        )
        .default("false")
    }

    /// `allowruntimeparams`: submitters may add parameters (default false).
    pub fn allowruntimeparams() -> Field {
        Field::new(
            "allowruntimeparams",
            FieldType::Bool,
            "Let submitters add parameters",
        )
        .default("false")
    }
}
