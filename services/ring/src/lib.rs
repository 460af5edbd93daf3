//! punktfunk-ring (being written).
