//! punktfunk-proto (being written).
