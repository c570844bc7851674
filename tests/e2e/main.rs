//! One integration-test binary: every end-to-end scenario is a module here.
