//! punktfunk-wire (being written).
