//! Unpacking artifact archives (Spark .tgz, Java .tar.gz) into payload trees.
