//! punktfunk-dataplane (being written).
