//! Histories, workloads, nemeses and the consistency checker for Jepsen-style testing. Not
//! written yet: see the "Deterministic simulator" issue; `oxbow-sim`'s cluster checker is the
//! first piece.
