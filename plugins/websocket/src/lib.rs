//! The `websocket` receptor plugin: the `ws-listener` and `ws-peer` backends (work in progress).
