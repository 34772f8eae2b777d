//! Turning a base image plus a payload tree into a golden image.
