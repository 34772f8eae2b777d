//! Content-addressed artifact cache and the download pipeline.
