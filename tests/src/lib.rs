//! punktfunk-tests (being written).
