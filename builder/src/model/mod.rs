//! Lab and recipe models: parsed once, validated at the edge.
