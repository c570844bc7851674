//! Helpers shared by the end-to-end tests: building, starting and talking to receptor nodes.
