//! Every command-line flag of strata, in one place (clap derive).

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// strata: build, store, move, mount and run container images, daemonless.
#[derive(Debug, Parser)]
#[command(name = "strata", version, about, max_term_width = 100)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Flags every command takes.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// The store directory [default: /var/lib/strata as root, $XDG_DATA_HOME/strata otherwise]
    #[arg(long, global = true, env = "STRATA_ROOT", value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// How image layers are mounted: kernel overlayfs, or strata's FUSE union filesystem
    #[arg(long, global = true, env = "STRATA_STORAGE_DRIVER", value_enum)]
    pub storage_driver: Option<StorageDriver>,
    /// How much to log on stderr: error, warn, info, debug, trace
    #[arg(
        long,
        global = true,
        env = "STRATA_LOG",
        default_value = "warn",
        value_name = "LEVEL"
    )]
    pub log_level: String,
}

/// `--storage-driver`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StorageDriver {
    Overlay,
    Fuse,
}

/// `--progress`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum ProgressMode {
    /// A live view on a terminal, plain lines otherwise
    #[default]
    Auto,
    /// One line per step or layer
    Plain,
    /// The live view, even when stderr is not a terminal
    Tty,
    /// One JSON event per line, for machines
    Json,
    /// Nothing but errors (a failed build step's output with its error); the result still
    /// goes to stdout
    Quiet,
}

/// `--network`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum NetworkMode {
    /// Share the host's network
    Host,
    /// A network namespace of its own with only `lo`
    None,
}

/// `run --pull`: when to pull the image from its registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum PullPolicy {
    /// Only when the store does not have it
    #[default]
    Missing,
    /// Every time (the store keeps what it already has of it)
    Always,
    /// Never: a missing image is an error
    Never,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Build an image from a Dockerfile
    Build(Box<BuildArgs>),
    /// Run a command in a new container of an image
    Run(Box<RunArgs>),
    /// List the images in the store
    Images(ImagesArgs),
    /// Print an image's config, manifest, id or digest, from the store or a registry
    /// (`docker://REF`, nothing pulled)
    Inspect(InspectArgs),
    /// Show the steps that made an image, newest first, with the size of each one's layer
    History(HistoryArgs),
    /// Give an image another name
    Tag(TagArgs),
    /// Remove images (by name: just that name)
    Rmi(RmiArgs),
    /// Make a one-layer image from a root filesystem tarball
    Import(ImportArgs),
    /// Write an image's files, its layers flattened, as one tar (the reverse of `import`)
    Export(ExportArgs),
    /// Write an image to an archive or an OCI layout directory
    Save(SaveArgs),
    /// Read images from an archive or an OCI layout directory
    Load(LoadArgs),
    /// Fetch an image from a registry
    Pull(PullArgs),
    /// Send an image to a registry
    Push(PushArgs),
    /// Copy an image between registries (`docker://REF`), OCI layout directories
    /// (`oci:DIR[:NAME]`) and the store, as skopeo copy does; digests are kept
    Copy(CopyArgs),
    /// List the tags of a repository in a registry
    ListTags(ListTagsArgs),
    /// Work on multi-platform images in registries, as docker buildx imagetools
    #[command(subcommand)]
    Imagetools(ImagetoolsCommand),
    /// Store credentials for a registry
    Login(LoginArgs),
    /// Forget the credentials of a registry
    Logout(LogoutArgs),
    /// Mount an image's layers as a writable union at a directory
    Mount(MountArgs),
    /// Unmount what `strata mount` mounted, and drop its writable layer
    Umount(UmountArgs),
    /// Remove untagged images and every blob and layer no image or cache entry needs
    Prune(PruneArgs),
    /// Verify every blob against its digest and every extracted layer against its blob
    Fsck(FsckArgs),
    /// Show the store, the storage driver and the kernel features strata uses here
    Info(InfoArgs),
}

#[derive(Debug, Args)]
pub struct BuildArgs {
    /// Name the image (repeatable)
    #[arg(short = 't', long = "tag", value_name = "NAME")]
    pub tags: Vec<String>,
    /// The Dockerfile, `-` for stdin [default: CONTEXT/Dockerfile]
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// Set a build argument (KEY=VALUE, or KEY to take it from the environment)
    #[arg(long = "build-arg", value_name = "KEY=VALUE")]
    pub build_args: Vec<String>,
    /// Pull the images the build uses (FROM, COPY --from) even when the store has them
    #[arg(long)]
    pub pull: bool,
    /// A named context, as buildx has them (repeatable). NAME=DIR (or the http(s) URL of a
    /// tar): `COPY --from=NAME` and `RUN --mount=from=NAME` read DIR (with its own
    /// .dockerignore), before any stage or image of that name. NAME=docker-image://REF: `FROM NAME` and `--from=NAME` use the image REF
    /// wherever they would use the image NAME
    #[arg(long = "build-context", value_name = "NAME=DIR|URL|docker-image://REF")]
    pub build_contexts: Vec<String>,
    /// Add a label to the image (repeatable; wins over a LABEL of the same key)
    #[arg(long = "label", value_name = "KEY=VALUE")]
    pub labels: Vec<String>,
    /// A secret for `RUN --mount=type=secret` (repeatable): id=ID with src=FILE or env=VAR
    /// (without either: the variable ID if set, else the file ID)
    #[arg(long = "secret", value_name = "id=ID,src=FILE|env=VAR")]
    pub secrets: Vec<String>,
    /// An ssh agent for `RUN --mount=type=ssh` (repeatable): `default` is $SSH_AUTH_SOCK
    #[arg(long = "ssh", value_name = "ID[=SOCKET]")]
    pub ssh: Vec<String>,
    /// Build up to this stage
    #[arg(long, value_name = "STAGE")]
    pub target: Option<String>,
    /// Run every step, using no cached result
    #[arg(long)]
    pub no_cache: bool,
    /// Take cached steps from what `--cache-to` wrote, as buildx: `type=registry,ref=REF` (or
    /// `REF`) or `type=local,src=DIR`; one that is not there is a warning (repeatable)
    #[arg(
        long = "cache-from",
        value_name = "type=registry,ref=REF|type=local,src=DIR"
    )]
    pub cache_from: Vec<String>,
    /// Write this build's cache entries, as buildx: to a registry, `type=registry,ref=REF`, or
    /// to an OCI layout directory, `type=local,dest=DIR` (for a CI cache)
    #[arg(
        long = "cache-to",
        value_name = "type=registry,ref=REF|type=local,dest=DIR"
    )]
    pub cache_to: Option<String>,
    /// Add a line to RUN steps' /etc/hosts: `NAME:IP` (repeatable)
    #[arg(long = "add-host", value_name = "NAME:IP")]
    pub add_hosts: Vec<String>,
    /// A resource limit of RUN steps: `NAME=SOFT[:HARD]` (repeatable)
    #[arg(long, value_name = "NAME=SOFT[:HARD]")]
    pub ulimit: Vec<String>,
    /// The size of RUN steps' /dev/shm (e.g. 256m) [default: 64m]
    #[arg(long, value_name = "SIZE")]
    pub shm_size: Option<String>,
    /// Squash the layers the build made into one, over the base image's (as docker's)
    #[arg(long)]
    pub squash: bool,
    /// Squash every layer, the base image's too, into one (as podman's)
    #[arg(long, conflicts_with = "squash")]
    pub squash_all: bool,
    /// The network of RUN steps
    #[arg(long, value_enum, default_value = "host")]
    pub network: NetworkMode,
    /// Write the image id to this file
    #[arg(long, value_name = "FILE")]
    pub iidfile: Option<PathBuf>,
    /// Write what was built as JSON to this file, with buildx's keys
    /// (`containerimage.digest`, `containerimage.config.digest`, `image.name`)
    #[arg(long, value_name = "FILE")]
    pub metadata_file: Option<PathBuf>,
    /// Also write the result out, as buildx does: `type=local,dest=DIR` (the image's files;
    /// a bare DIR means the same), `type=docker,dest=FILE` or `type=oci,dest=FILE` (archives);
    /// repeatable
    #[arg(short = 'o', long = "output", value_name = "type=TYPE,dest=PATH")]
    pub outputs: Vec<String>,
    #[arg(long, value_enum, default_value_t)]
    pub progress: ProgressMode,
    /// `--progress quiet`: only the image id on stdout, as `docker build -q`
    #[arg(short, long, conflicts_with = "progress")]
    pub quiet: bool,
    /// Push every tag once built
    #[arg(long)]
    pub push: bool,
    /// Layer compression: `gzip[:LEVEL]`, `zstd[:LEVEL]` or `none`
    #[arg(long, default_value = "gzip", value_name = "ALGO")]
    pub compression: String,
    /// The platform to build for (only the host's is supported)
    #[arg(long, value_name = "OS/ARCH")]
    pub platform: Option<String>,
    /// Use plain HTTP and skip certificate checks for the registries of --push and FROM
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub tls_verify: bool,
    /// The build context: a directory, `-` (a tar of it, or a Dockerfile alone, on stdin) or
    /// an http(s) URL of either
    pub context: PathBuf,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Remove the container when it exits (always the case: strata keeps no stopped containers)
    #[arg(long)]
    pub rm: bool,
    /// Keep stdin open
    #[arg(short = 'i', long)]
    pub interactive: bool,
    /// Allocate a pseudo-terminal
    #[arg(short = 't', long)]
    pub tty: bool,
    /// Set an environment variable (KEY=VALUE, or KEY to copy it from here)
    #[arg(short = 'e', long = "env", value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// Read environment variables from a file: a KEY=VALUE (or KEY) a line, `#` comments;
    /// repeatable, and `-e` wins
    #[arg(long = "env-file", value_name = "FILE")]
    pub env_files: Vec<PathBuf>,
    /// Bind-mount a host path: `SRC:DST[:ro]`
    #[arg(short = 'v', long = "volume", value_name = "SRC:DST[:ro]")]
    pub volumes: Vec<String>,
    /// Mount a fresh tmpfs: `PATH[:OPTIONS]` (ro, exec, suid, dev, size=64m, mode=1777, uid=,
    /// gid=; noexec, nosuid, nodev by default, as docker has it)
    #[arg(long, value_name = "PATH[:OPTIONS]")]
    pub tmpfs: Vec<String>,
    /// A mount in docker's long syntax: `type=bind,source=SRC,target=DST[,readonly]` or
    /// `type=tmpfs,target=DST[,tmpfs-size=64m][,tmpfs-mode=1770]` (repeatable)
    #[arg(long = "mount", value_name = "type=…,target=…")]
    pub mounts: Vec<String>,
    /// The working directory inside the container
    #[arg(short = 'w', long = "workdir", value_name = "DIR")]
    pub workdir: Option<String>,
    /// The user: name or uid, with an optional :group
    #[arg(short = 'u', long = "user", value_name = "USER[:GROUP]")]
    pub user: Option<String>,
    /// Add a supplementary group: a name in the image's /etc/group, or a gid (repeatable)
    #[arg(long = "group-add", value_name = "GROUP")]
    pub group_add: Vec<String>,
    /// Replace the image's entrypoint
    #[arg(long, value_name = "CMD")]
    pub entrypoint: Option<String>,
    #[arg(long, value_enum, default_value = "host")]
    pub network: NetworkMode,
    /// The container's hostname
    #[arg(long, value_name = "NAME")]
    pub hostname: Option<String>,
    /// Memory limit, e.g. 32m, 1g
    #[arg(short = 'm', long, value_name = "BYTES")]
    pub memory: Option<String>,
    /// CPU limit, e.g. 0.5
    #[arg(long, value_name = "N")]
    pub cpus: Option<f64>,
    /// Limit on the number of processes
    #[arg(long, value_name = "N")]
    pub pids_limit: Option<i64>,
    /// A resource limit of the command: `NAME=SOFT[:HARD]` (nofile, nproc, core, stack, …;
    /// -1 for unlimited; repeatable)
    #[arg(long, value_name = "NAME=SOFT[:HARD]")]
    pub ulimit: Vec<String>,
    /// Mount the root filesystem read-only
    #[arg(long)]
    pub read_only: bool,
    /// Bind a host device into the container: `HOST[:CONTAINER]` (e.g. /dev/fuse; repeatable)
    #[arg(long = "device", value_name = "HOST[:CONTAINER]")]
    pub devices: Vec<String>,
    /// Add a line to /etc/hosts: `NAME:IP` (repeatable)
    #[arg(long = "add-host", value_name = "NAME:IP")]
    pub add_hosts: Vec<String>,
    /// A nameserver for /etc/resolv.conf, in place of the host's (repeatable)
    #[arg(long = "dns", value_name = "IP")]
    pub dns: Vec<String>,
    /// The size of /dev/shm (e.g. 256m) [default: 64m]
    #[arg(long, value_name = "SIZE")]
    pub shm_size: Option<String>,
    /// `no-new-privileges` (setuid bits and file capabilities stop working) or
    /// `seccomp=unconfined` (no seccomp filter), as docker's (repeatable)
    #[arg(long = "security-opt", value_name = "OPT")]
    pub security_opts: Vec<String>,
    /// Accepted for docker's sake: strata's own init is always the container's PID 1 (it
    /// forwards signals and reaps orphans, as `docker run --init` adds)
    #[arg(long)]
    pub init: bool,
    /// Give the container every capability, no seccomp filter, the host's devices and a
    /// writable /sys, as `docker run --privileged` does (for docker-in-docker, buildah, FUSE
    /// or loop devices inside the container)
    #[arg(long, conflicts_with_all = ["cap_add", "cap_drop"])]
    pub privileged: bool,
    /// Add a capability to docker's default set (e.g. NET_ADMIN, or ALL; repeatable)
    #[arg(long = "cap-add", value_name = "CAP")]
    pub cap_add: Vec<String>,
    /// Drop a capability from the set (e.g. CHOWN, or ALL; repeatable)
    #[arg(long = "cap-drop", value_name = "CAP")]
    pub cap_drop: Vec<String>,
    /// When to pull the image from its registry
    #[arg(long, value_enum, default_value_t)]
    pub pull: PullPolicy,
    /// With a pull: pick this platform from a multi-platform image (and pull again when the
    /// store's image is of another) [default: this host's]
    #[arg(long, value_name = "OS/ARCH[/VARIANT]")]
    pub platform: Option<String>,
    /// With a pull: use plain HTTP and skip certificate checks (localhost and 127.0.0.0/8 need
    /// no flag)
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub tls_verify: bool,
    pub image: String,
    /// The command and its arguments (replace the image's Cmd)
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

#[derive(Debug, Args)]
pub struct ImagesArgs {
    #[arg(long, value_enum, default_value_t)]
    pub format: ListFormat,
    /// Only the images that pass: `dangling=true|false` (untagged), `reference=PATTERN` (a
    /// glob over `name:tag`, or the name; several are or'ed), `label=KEY[=VALUE]` (several
    /// are and'ed), as docker's (repeatable)
    #[arg(short, long = "filter", value_name = "KEY=VALUE")]
    pub filters: Vec<String>,
    /// Only the image ids, each image once (for `strata rmi $(strata images -q)`)
    #[arg(short, long, conflicts_with = "format")]
    pub quiet: bool,
    /// Whole image ids (`sha256:…`), not their first 12 digits
    #[arg(long)]
    pub no_trunc: bool,
    /// A column with each image's manifest digest (what to pull it by)
    #[arg(long)]
    pub digests: bool,
    /// Only this repository (every tag of it), or with `:TAG` only that tag
    #[arg(value_name = "REPOSITORY[:TAG]")]
    pub filter: Option<String>,
}

/// `images --format`, `history --format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum ListFormat {
    /// Columns for people
    #[default]
    Table,
    /// One JSON array for machines
    Json,
}

/// `inspect --format`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum InspectFormat {
    /// The OCI image config JSON
    #[default]
    Config,
    /// The manifest JSON
    Manifest,
    /// The image id (the config's digest)
    Id,
    /// The manifest's digest
    Digest,
    /// The manifest byte for byte as stored; for a `docker://` image, what the reference names
    /// as the registry serves it (the index of a multi-platform image)
    Raw,
    /// A Go template over docker's inspect fields (`{{.Id}}`, `{{json .Config.Env}}`, …)
    Template(String),
}

impl std::str::FromStr for InspectFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "config" => InspectFormat::Config,
            "manifest" => InspectFormat::Manifest,
            "id" => InspectFormat::Id,
            "digest" => InspectFormat::Digest,
            "raw" => InspectFormat::Raw,
            t if t.contains("{{") => InspectFormat::Template(t.to_owned()),
            other => {
                return Err(format!(
                    "{other:?} is none of config, manifest, id, digest, raw, or a {{{{template}}}}"
                ));
            }
        })
    }
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// config (the OCI config JSON), manifest, id (the config's digest), digest (the
    /// manifest's), raw (the manifest byte for byte; for `docker://`, the index of a
    /// multi-platform image as served), or a Go template over docker's inspect fields: `.Id`,
    /// `.Digest`, `.RepoTags`, `.RepoDigests`, `.Created`, `.Architecture`, `.Os`, `.Config`
    /// (`.Config.Env`, `.Config.Labels`…), `.RootFS.Layers`, `.Size`; e.g. `'{{json .Config.Env}}'`
    #[arg(short, long, default_value = "config", value_name = "FORMAT")]
    pub format: InspectFormat,
    /// For a `docker://` image: pick this platform from a multi-platform image [default: this
    /// host's]
    #[arg(long, value_name = "OS/ARCH[/VARIANT]")]
    pub platform: Option<String>,
    /// For a `docker://` image: use plain HTTP and skip certificate checks (localhost and
    /// 127.0.0.0/8 need no flag)
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub tls_verify: bool,
    /// A local image, or `docker://REFERENCE` for one in a registry (nothing is pulled)
    pub image: String,
}

#[derive(Debug, Args)]
pub struct InfoArgs {
    #[arg(long, value_enum, default_value_t)]
    pub format: ListFormat,
}

#[derive(Debug, Args)]
pub struct HistoryArgs {
    #[arg(long, value_enum, default_value_t)]
    pub format: ListFormat,
    /// Show each step's command whole (it is cut to fit a line otherwise)
    #[arg(long)]
    pub no_trunc: bool,
    pub image: String,
}

#[derive(Debug, Args)]
pub struct TagArgs {
    pub source: String,
    /// The new names (one or more)
    #[arg(required = true)]
    pub targets: Vec<String>,
}

#[derive(Debug, Args)]
pub struct RmiArgs {
    /// By id, remove an image even when it is named in several repositories
    #[arg(short, long)]
    pub force: bool,
    #[arg(required = true)]
    pub images: Vec<String>,
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// A root filesystem tarball (plain, gzip, zstd or xz)
    pub tarball: PathBuf,
    pub name: String,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Where to write the tar [default: stdout, which must not be a terminal; `-` too]
    #[arg(short = 'o', long = "output", value_name = "PATH")]
    pub output: Option<PathBuf>,
    pub image: String,
}

/// `save --format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum ArchiveFormat {
    /// What `docker save` writes and `docker load` reads
    #[default]
    DockerArchive,
    /// An OCI image layout in a tar file
    OciArchive,
    /// An OCI image layout directory
    OciDir,
}

#[derive(Debug, Args)]
pub struct SaveArgs {
    #[arg(long, value_enum, default_value_t)]
    pub format: ArchiveFormat,
    /// Where to write [default: stdout, which must not be a terminal; `-` too]
    #[arg(short = 'o', long = "output", value_name = "PATH")]
    pub output: Option<PathBuf>,
    /// The images to write, each with the name it is given by (blobs they share go once)
    #[arg(required = true)]
    pub images: Vec<String>,
}

#[derive(Debug, Args)]
pub struct LoadArgs {
    /// A docker archive, an OCI archive or an OCI layout directory [default: an archive on
    /// stdin; `-` too]
    #[arg(short = 'i', long = "input", value_name = "PATH")]
    pub input: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct RegistryArgs {
    /// Use plain HTTP and skip certificate checks (localhost and 127.0.0.0/8 need no flag)
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub tls_verify: bool,
    #[arg(long, value_enum, default_value_t)]
    pub progress: ProgressMode,
}

#[derive(Debug, Args)]
pub struct PullArgs {
    #[command(flatten)]
    pub registry: RegistryArgs,
    /// Pick this platform from a multi-platform image [default: this host's]
    #[arg(long, value_name = "OS/ARCH[/VARIANT]")]
    pub platform: Option<String>,
    pub reference: String,
}

#[derive(Debug, Args)]
pub struct PushArgs {
    #[command(flatten)]
    pub registry: RegistryArgs,
    /// The local image
    pub image: String,
    /// Where to push it [default: the image's name]
    pub destination: Option<String>,
    /// Write the pushed manifest's digest to this file (for signing or deploying by digest)
    #[arg(long, value_name = "FILE")]
    pub digestfile: Option<PathBuf>,
    /// Push every tag of the repository IMAGE has, each to its own name (as docker's)
    #[arg(short, long, conflicts_with_all = ["destination", "digestfile"])]
    pub all_tags: bool,
}

#[derive(Debug, Args)]
pub struct CopyArgs {
    #[command(flatten)]
    pub registry: RegistryArgs,
    /// Copy a multi-platform image whole: its index and every platform's image (registry to
    /// registry; the store keeps one platform of an image)
    #[arg(short, long, conflicts_with = "platform")]
    pub all: bool,
    /// The platform to copy from a multi-platform image [default: this host's]
    #[arg(long, value_name = "OS/ARCH[/VARIANT]")]
    pub platform: Option<String>,
    /// Write the digest of the manifest copied to this file
    #[arg(long, value_name = "FILE")]
    pub digestfile: Option<PathBuf>,
    /// `docker://REF` (an image in a registry), `oci:DIR[:NAME]` (in an OCI layout
    /// directory), or an image of the store
    pub source: String,
    /// `docker://REF`, `oci:DIR[:NAME]` (made if missing; NAME replaces what had it), or a
    /// name in the store
    pub destination: String,
}

#[derive(Debug, Subcommand)]
pub enum ImagetoolsCommand {
    /// Make one multi-platform image (an index) of images already in registries, one per
    /// platform (an index given as a source adds every image it lists)
    Create(ImagetoolsCreateArgs),
    /// Show what a reference names in its registry: an index and the platforms it lists, or
    /// one image manifest
    Inspect(ImagetoolsInspectArgs),
}

#[derive(Debug, Args)]
pub struct ImagetoolsInspectArgs {
    /// Use plain HTTP and skip certificate checks (localhost and 127.0.0.0/8 need no flag)
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub tls_verify: bool,
    /// Print the manifest or index byte for byte
    #[arg(long)]
    pub raw: bool,
    /// The image (`docker://` in front is accepted)
    pub reference: String,
}

#[derive(Debug, Args)]
pub struct ImagetoolsCreateArgs {
    #[command(flatten)]
    pub registry: RegistryArgs,
    /// Where to push the index (repeatable); the images it lists are copied there first
    #[arg(
        short = 't',
        long = "tag",
        value_name = "REF",
        required_unless_present = "dry_run"
    )]
    pub tags: Vec<String>,
    /// Print the index instead of pushing it
    #[arg(long)]
    pub dry_run: bool,
    /// Annotate the index (`[index:]KEY=VALUE`) or each of its entries
    /// (`manifest-descriptor:KEY=VALUE`); repeatable
    #[arg(long = "annotation", value_name = "[TYPE:]KEY=VALUE")]
    pub annotations: Vec<String>,
    /// The images (`docker://` in front is accepted), in the order the index lists them
    #[arg(required = true, value_name = "SOURCE")]
    pub sources: Vec<String>,
}

#[derive(Debug, Args)]
pub struct ListTagsArgs {
    /// Use plain HTTP and skip certificate checks (localhost and 127.0.0.0/8 need no flag)
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub tls_verify: bool,
    /// One tag per line, or skopeo's JSON (`{"Repository": …, "Tags": […]}`)
    #[arg(long, value_enum, default_value_t)]
    pub format: TagsFormat,
    /// The repository (`docker://` in front is accepted)
    pub repository: String,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum TagsFormat {
    /// One tag per line
    #[default]
    Lines,
    /// One JSON object, as skopeo list-tags prints
    Json,
}

#[derive(Debug, Args)]
pub struct LoginArgs {
    #[arg(short = 'u', long, value_name = "USER")]
    pub username: Option<String>,
    /// Read the password from stdin
    #[arg(long)]
    pub password_stdin: bool,
    /// The password (visible to other users of this machine: prefer --password-stdin)
    #[arg(short = 'p', long, value_name = "PASSWORD")]
    pub password: Option<String>,
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub tls_verify: bool,
    pub registry: String,
}

#[derive(Debug, Args)]
pub struct LogoutArgs {
    pub registry: String,
}

#[derive(Debug, Args)]
pub struct MountArgs {
    pub image: String,
    pub dir: PathBuf,
}

#[derive(Debug, Args)]
pub struct UmountArgs {
    pub dir: PathBuf,
}

#[derive(Debug, Args)]
pub struct FsckArgs {
    /// Remove extracted layers that do not match their blob (they are extracted again, from
    /// the verified blob, when next needed)
    #[arg(long)]
    pub repair: bool,
}

#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Also empty the build cache
    #[arg(long)]
    pub all: bool,
}

/// strata-unionfs: strata's FUSE union filesystem, with the semantics of kernel overlayfs
/// (strata started under that name)
#[derive(Debug, Parser)]
#[command(name = "strata-unionfs", version, max_term_width = 100)]
pub struct UnionfsCli {
    /// Mount options: lowerdir=A:B (top first), upperdir=U, workdir=W, threads=N,
    /// passthrough=on|off, and the generic mount options, which are accepted and ignored
    #[arg(short = 'o', value_name = "OPTIONS")]
    pub options: Vec<OsString>,
    /// Stay in the foreground (the default unless called as a mount helper)
    #[arg(short = 'f')]
    pub foreground: bool,
    /// Log every request on stderr
    #[arg(short = 'd')]
    pub debug: bool,
    /// The socket of the strata process that started this daemon (internal)
    #[arg(long, value_name = "FD", hide = true)]
    pub control_fd: Option<i32>,
    /// `[SOURCE] MOUNTPOINT`: the source, which mount(8) passes, is ignored
    #[arg(required = true, num_args = 1..=2, value_name = "MOUNTPOINT")]
    pub args: Vec<PathBuf>,
}
