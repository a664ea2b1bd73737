//! Where a bucket's requests go: the endpoint, path-style or
//! virtual-hosted addressing, the region signed for, and moving to the
//! region the store says the bucket is in.
//!
//! `addressing_style` `auto` (the default) is virtual-hosted on AWS
//! (`https://{bucket}.s3.{region}.amazonaws.com/{key}`, path-style for
//! names with dots, which no certificate covers) and path-style on any
//! other endpoint (`{endpoint}/{bucket}/{key}`), since many S3-compatible
//! stores accept only that; `path` and `virtual` force one.

use std::sync::RwLock;

use super::sign::uri_encode;
use crate::download::error::DownloadError;
use crate::download::request::AddressingStyle;
use crate::net::Url;

/// The bucket's host and the region signed for, as they are now.
#[derive(Clone, Debug)]
pub struct Target {
    /// Scheme and host of every request (its target is unused).
    pub base: Url,
    /// The region signatures name.
    pub region: String,
}

#[derive(Debug)]
enum Hosting {
    /// AWS itself: the host follows the region.
    Aws { virtual_hosted: bool },
    /// A given endpoint: the region only changes signatures.
    Endpoint,
}

/// How a bucket is addressed.
#[derive(Debug)]
pub struct Addressing {
    hosting: Hosting,
    bucket: String,
    /// Path before object keys: the endpoint's path, and `/bucket`
    /// path-style.
    key_root: String,
    current: RwLock<Target>,
}

impl Addressing {
    /// Addresses `bucket` at `endpoint` (AWS without one) in `region`.
    pub fn new(
        bucket: &str,
        endpoint: Option<&str>,
        region: String,
        style: AddressingStyle,
    ) -> Result<Addressing, DownloadError> {
        let (hosting, base, key_root) = match endpoint {
            Some(endpoint) => {
                let endpoint = if endpoint.contains("://") {
                    endpoint.to_owned()
                } else {
                    format!("https://{endpoint}")
                };
                let mut base = Url::parse(endpoint.trim_end_matches('/'))
                    .map_err(|e| DownloadError::BadPath(format!("endpoint: {e}")))?;
                let prefix = base.target.trim_end_matches('/').to_owned();
                let key_root = match style {
                    AddressingStyle::Virtual => {
                        base.origin.host = format!("{bucket}.{}", base.origin.host);
                        prefix
                    }
                    AddressingStyle::Path | AddressingStyle::Auto => {
                        format!("{prefix}/{}", uri_encode(bucket, false))
                    }
                };
                (Hosting::Endpoint, base, key_root)
            }
            None => {
                let virtual_hosted = match style {
                    AddressingStyle::Virtual => true,
                    AddressingStyle::Path => false,
                    AddressingStyle::Auto => !bucket.contains('.'),
                };
                let base = aws_base(bucket, &region, virtual_hosted)?;
                let key_root = match virtual_hosted {
                    true => String::new(),
                    false => format!("/{}", uri_encode(bucket, false)),
                };
                (Hosting::Aws { virtual_hosted }, base, key_root)
            }
        };
        Ok(Addressing {
            hosting,
            bucket: bucket.to_owned(),
            key_root,
            current: RwLock::new(Target { base, region }),
        })
    }

    /// Where requests go now.
    pub fn target(&self) -> Target {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Whether this is AWS itself (whose answers may name the region in
    /// their body).
    pub fn is_aws(&self) -> bool {
        matches!(self.hosting, Hosting::Aws { .. })
    }

    /// The path before object keys.
    pub fn key_root(&self) -> &str {
        &self.key_root
    }

    /// The store named the bucket's region (`x-amz-bucket-region`):
    /// requests go there from now on. `false` if that is where they went.
    pub fn move_to(&self, region: &str) -> Result<bool, DownloadError> {
        let mut current = self.current.write().unwrap_or_else(|e| e.into_inner());
        if current.region == region {
            return Ok(false);
        }
        if let Hosting::Aws { virtual_hosted } = self.hosting {
            current.base = aws_base(&self.bucket, region, virtual_hosted)?;
        }
        current.region = region.to_owned();
        Ok(true)
    }
}

/// AWS's S3 host for `region`.
fn aws_base(bucket: &str, region: &str, virtual_hosted: bool) -> Result<Url, DownloadError> {
    let suffix = if region.starts_with("cn-") {
        "amazonaws.com.cn"
    } else {
        "amazonaws.com"
    };
    let host = match virtual_hosted {
        true => format!("https://{bucket}.s3.{region}.{suffix}"),
        false => format!("https://s3.{region}.{suffix}"),
    };
    Url::parse(&host)
        .map_err(|e| DownloadError::BadPath(format!("bucket {bucket:?} in {region}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(a: &Addressing) -> (String, String) {
        (a.target().base.host_header(), a.key_root().to_owned())
    }

    #[test]
    fn styles() {
        let auto = AddressingStyle::Auto;
        let a = Addressing::new("models", None, "eu-west-1".into(), auto).unwrap();
        assert_eq!(
            at(&a),
            ("models.s3.eu-west-1.amazonaws.com".into(), String::new())
        );
        let a = Addressing::new("my.models", None, "eu-west-1".into(), auto).unwrap();
        assert_eq!(
            at(&a),
            ("s3.eu-west-1.amazonaws.com".into(), "/my.models".into())
        );
        let a = Addressing::new("models", None, "us-east-1".into(), AddressingStyle::Path).unwrap();
        assert_eq!(
            at(&a),
            ("s3.us-east-1.amazonaws.com".into(), "/models".into())
        );
        let a = Addressing::new("models", None, "cn-north-1".into(), auto).unwrap();
        assert_eq!(at(&a).0, "models.s3.cn-north-1.amazonaws.com.cn");
        let minio = Some("http://minio.local:9000/s3");
        let a = Addressing::new("models", minio, "us-east-1".into(), auto).unwrap();
        assert_eq!(at(&a), ("minio.local:9000".into(), "/s3/models".into()));
        let a = Addressing::new(
            "models",
            minio,
            "us-east-1".into(),
            AddressingStyle::Virtual,
        )
        .unwrap();
        assert_eq!(at(&a), ("models.minio.local:9000".into(), "/s3".into()));
        let a = Addressing::new(
            "b",
            Some("obs.cn-north-4.myhuaweicloud.com"),
            "x".into(),
            auto,
        )
        .unwrap();
        assert!(a.target().base.origin.https);
    }

    #[test]
    fn moving_region() {
        let a = Addressing::new("models", None, "us-east-1".into(), AddressingStyle::Auto).unwrap();
        assert!(a.move_to("ap-southeast-2").unwrap());
        assert_eq!(a.target().region, "ap-southeast-2");
        assert_eq!(at(&a).0, "models.s3.ap-southeast-2.amazonaws.com");
        assert!(!a.move_to("ap-southeast-2").unwrap());
        let local = Addressing::new(
            "m",
            Some("http://127.0.0.1:9000"),
            "us-east-1".into(),
            AddressingStyle::Auto,
        )
        .unwrap();
        assert!(local.move_to("eu-west-1").unwrap());
        assert_eq!(at(&local).0, "127.0.0.1:9000");
        assert_eq!(local.target().region, "eu-west-1");
    }
}
