//! Configuration: the YAML list form, the `version: 2` map form and command-line flags.
