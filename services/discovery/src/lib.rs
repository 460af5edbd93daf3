//! punktfunk-discovery (being written).
