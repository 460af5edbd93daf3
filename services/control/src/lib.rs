//! punktfunk-control (being written).
