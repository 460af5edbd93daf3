//! punktfunk-common (being written).
