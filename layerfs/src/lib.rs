//! layerfs: strata's storage layer.
//!
//! - [`store`]: the content store, an OCI image layout with strata's extracted layers beside it;
//! - [`layer`]: layer tars to and from overlay-format directories, streaming and verified;
//! - [`mount`]: the image's layers as a writable union (kernel overlayfs, or [`fuse`]);
//! - [`fuse`]: strata's FUSE union filesystem, with the semantics of overlayfs;
//! - [`archive`]: `docker save`/OCI archives in and out;
//! - [`layout`]: plain OCI image layouts (`oci:DIR:NAME`), apart from the store;
//! - [`cache_export`]: the build cache as an OCI index, for registries and layout directories;
//! - [`reference`](mod@reference), [`digest`], [`config`]: the pure pieces the rest is built on.

pub mod archive;
pub mod cache_export;
pub mod config;
pub mod digest;
pub mod error;
pub mod fuse;
pub mod layer;
pub mod layout;
pub mod maintenance;
pub mod mount;
pub mod reference;
pub mod store;

pub use error::{Error, Result};
