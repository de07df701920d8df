//! Workspace-level tests: the dependency rules of docs/ARCHITECTURE.md and repository tidiness.
//! End-to-end tests with real node processes join them as the node runtime lands.
