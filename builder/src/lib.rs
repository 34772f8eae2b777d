//! imgbuild: lab and recipe models, artifact fetching, image baking.
