//! Role defaults, once for the whole project: the builder fills them into a
//! lab's guests and the seed fills them into a document that omits them.

/// MinIO's S3 API port.
pub const MINIO_API_PORT: u16 = 9000;
/// MinIO's web console port.
pub const MINIO_CONSOLE_PORT: u16 = 9001;
/// MinIO's data directory (owned by the object-store user).
pub const MINIO_DATA_DIR: &str = "/var/lib/minio";
/// MinIO's log directory.
pub const MINIO_LOG_DIR: &str = "/var/log/minio";
/// SPARK_HOME in the image.
pub const SPARK_HOME: &str = "/opt/spark";
/// JAVA_HOME in the image.
pub const JAVA_HOME: &str = "/opt/java";
/// SPARK_LOG_DIR.
pub const SPARK_LOG_DIR: &str = "/opt/spark/logs";
/// The Spark master's RPC port.
pub const SPARK_MASTER_PORT: u16 = 7077;
/// The Spark master's web UI port.
pub const SPARK_MASTER_UI_PORT: u16 = 8080;
/// A Spark worker's web UI port.
pub const SPARK_WORKER_UI_PORT: u16 = 8081;
