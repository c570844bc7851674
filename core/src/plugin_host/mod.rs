//! Loading plugins through the C ABI and keeping the registry of what they provide.
