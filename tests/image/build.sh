#!/usr/bin/env bash
# Builds vx11's container image without a Docker engine or a registry: an OCI image layout
# written as one tar, which `ctr -n k8s.io images import` (containerd, hence a kubelet node)
# and `kind load image-archive` take as it is.
#
#   bash tests/image/build.sh [--out DIR]          # or: make image-oci
#     -> DIR/vx11-image.tar, image docker.io/library/vx11:<appVersion of charts/vx11/Chart.yaml>
#   bash tests/image/build.sh --pause BIN [--out DIR]
#     -> DIR/vx11-pause-image.tar, image docker.io/library/vx11-pause:1 (the pod sandbox image:
#        containerd's sandbox_image = "docker.io/library/vx11-pause:1"), entrypoint /pause = BIN,
#        user 65535:65535. BIN should be static (tests/node/pause.c); a dynamic one gets its
#        libraries as the vx11 image does.
#
# DIR defaults to ${VX11_CACHE_DIR:-$HOME/.cache/vx11}/image. Progress goes to stderr; the LAST
# line on stdout is the tar's path.
#
# What goes in is read from the Dockerfile, so that `docker build` and this script make the
# same image; the Rust test tests/tests/image.rs parses the Dockerfile on its own and checks the
# tar against it.
#   - the binaries: the `--bin NAME`s of the build stage's `cargo build`, which this script
#     builds with `cargo build --release --locked` (CARGO_TARGET_DIR as the caller set it, or as
#     .ci/run sets it) and puts where the final stage's `COPY --from=build /out/ DEST/` puts them;
#   - USER, EXPOSE, ENTRYPOINT, CMD, WORKDIR, ENV of the final stage;
#   - what the final stage inherits from its base, gcr.io/distroless/cc-debian12:nonroot, is
#     written below (BASE_*): WorkingDir /home/nonroot, PATH, /etc/passwd and /etc/group with
#     nonroot = 65532. Any other base, or any other instruction in the final stage, stops the
#     script until this file learns it.
# The rootfs has the binaries, exactly the shared libraries they load (ldd; the dynamic loader
# at its PT_INTERP path), /etc/passwd, /etc/group, /home/nonroot (0700, 65532) and /tmp (1777):
# distroless cc's content class (glibc + libgcc, no shell). Unlike distroless it has no CA
# bundle, tzdata, nsswitch.conf or os-release; vx11 needs none of them in a cluster (the API
# server's CA comes from the ServiceAccount mount).
#
# Deterministic: entries sorted by name, mtime 0, uid/gid 0 (65532 for /home/nonroot), modes
# fixed, `gzip -n`, no creation time in the config: the same binaries give the same digest.
# Cached: the assembly is skipped when the binaries, their libraries, the Dockerfile, the chart
# version and this script hash as last time (DIR/<name>.key). VX11_REBUILD=1 assembles anyway.
#
# To run it on a private containerd (root; imports, runs one binary under runc, cleans up):
#   bash tests/image/ctr-check.sh "$(bash tests/image/build.sh)"
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
started=$SECONDS

say() { printf '[image +%ss] %s\n' "$((SECONDS - started))" "$*" >&2; }
die() { printf 'image build: %s\n' "$*" >&2; exit 1; }

# --- what the final stage inherits from its base -----------------------------------------------
BASE_IMAGE=gcr.io/distroless/cc-debian12:nonroot
BASE_USER=65532
BASE_WORKDIR=/home/nonroot
BASE_PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
BASE_PASSWD='root:x:0:0:root:/root:/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin
nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin'
BASE_GROUP='root:x:0:
nobody:x:65534:
tty:x:5:
staff:x:50:
nonroot:x:65532:'

PAUSE_IMAGE=docker.io/library/vx11-pause:1

# --- arguments ----------------------------------------------------------------------------------
out=${VX11_CACHE_DIR:-$HOME/.cache/vx11}/image
pause_bin=
while (($#)); do
	case $1 in
	--out) out=${2:?--out needs a directory}; shift 2 ;;
	--out=*) out=${1#--out=}; shift ;;
	--pause) pause_bin=${2:?--pause needs the pause program}; shift 2 ;;
	--pause=*) pause_bin=${1#--pause=}; shift ;;
	-h | --help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//' >&2; exit 0 ;;
	*) die "unknown argument: $1 (see --help)" ;;
	esac
done
for tool in tar gzip sha256sum ldd awk sort; do
	command -v "$tool" >/dev/null || die "$tool is needed"
done
export LC_ALL=C

json_str() { # a JSON string literal
	local s=$1
	s=${s//\\/\\\\}
	s=${s//\"/\\\"}
	s=${s//$'\t'/\\t}
	printf '"%s"' "$s"
}
sha256() { sha256sum "$1" | cut -c1-64; }
size_of() { stat -c %s "$1"; }

# --- the Dockerfile's final stage ---------------------------------------------------------------
# Lines joined at trailing backslashes, comments and blank lines dropped.
dockerfile_lines() {
	awk '
		/^[[:space:]]*#/ && cont == "" { next }
		{ line = cont $0 }
		/\\[[:space:]]*$/ { sub(/\\[[:space:]]*$/, "", line); cont = line " "; next }
		{ cont = ""; if (line ~ /[^[:space:]]/) print line }
	' "$repo/Dockerfile"
}

parse_dockerfile() {
	local all final last_from
	all=$(dockerfile_lines)
	last_from=$(grep -n '^FROM ' <<<"$all" | tail -n 1 | cut -d: -f1)
	[[ -n $last_from ]] || die "no FROM in $repo/Dockerfile"
	final=$(tail -n "+$last_from" <<<"$all")
	build_stage=$(head -n "$((last_from - 1))" <<<"$all")

	local from
	from=$(head -n 1 <<<"$final" | awk '{ print $2 }')
	[[ $from == "$BASE_IMAGE" ]] || die "the Dockerfile's final stage is FROM $from; this script knows only $BASE_IMAGE (update BASE_* in $0)"

	df_user=$BASE_USER df_workdir=$BASE_WORKDIR df_entrypoint= df_cmd= df_copy_dest=
	df_env=("PATH=$BASE_PATH")
	df_ports=()
	local line instr rest
	while IFS= read -r line; do
		instr=${line%% *}
		rest=${line#"$instr"}
		rest=${rest#"${rest%%[![:space:]]*}"}
		rest=${rest%"${rest##*[![:space:]]}"}
		case ${instr^^} in
		FROM) ;;
		USER) df_user=$rest ;;
		WORKDIR) df_workdir=$rest ;;
		EXPOSE) read -ra ports <<<"$rest"; df_ports+=("${ports[@]}") ;;
		ENTRYPOINT) df_entrypoint=$rest ;;
		CMD) df_cmd=$rest ;;
		ENV)
			[[ $rest == *=* && $rest != *' '* ]] || die "only ENV KEY=VALUE (one, without spaces) is understood: $line"
			local key=${rest%%=*} i
			for i in "${!df_env[@]}"; do [[ ${df_env[$i]} == "$key="* ]] && unset 'df_env[i]'; done
			df_env=("${df_env[@]}" "$rest")
			;;
		COPY)
			[[ $rest =~ ^--from=[A-Za-z0-9_-]+\ /out/\ (/[^ ]*/)$ ]] || die "only COPY --from=<stage> /out/ /<dir>/ is understood: $line"
			df_copy_dest=${BASH_REMATCH[1]%/}
			;;
		*) die "the final stage has '$instr', which this script does not know: $line" ;;
		esac
	done <<<"$final"
	[[ -n $df_copy_dest ]] || die "the final stage copies no binaries (COPY --from=build /out/ ...)"
	for v in df_entrypoint df_cmd; do
		[[ -z ${!v} || ${!v} == \[*\] ]] || die "${v#df_} must be in exec form ([\"...\"]): ${!v}"
	done
	[[ -n $df_entrypoint || -n $df_cmd ]] || die "no ENTRYPOINT or CMD in the final stage"

	# The binaries: the build stage's `cargo build --bin NAME ...`, each copied to /out/.
	mapfile -t df_bins < <(grep -o -- '--bin [A-Za-z0-9_-]*' <<<"$build_stage" | awk '{ print $2 }')
	((${#df_bins[@]})) || die "no 'cargo build --bin NAME' in the Dockerfile's build stage"
	local b
	for b in "${df_bins[@]}"; do
		grep -q "target/release/$b .*/out/\|target/release/$b /out/" <<<"$build_stage" ||
			die "the build stage builds $b but does not copy target/release/$b to /out/"
	done
}

# --- the rootfs ---------------------------------------------------------------------------------
# stage_file SRC DEST MODE: a regular file (symlinks resolved) at DEST in the rootfs.
stage_file() {
	local dest=$rootfs$2
	[[ -e $dest ]] && return 0
	mkdir -p "$(dirname "$dest")"
	cp -L "$1" "$dest"
	chmod "$3" "$dest"
}

# stage_libs BIN: the shared libraries BIN loads, where ldd finds them, the loader included
# (without LD_LIBRARY_PATH, which `cargo test` sets and the image's loader will not have).
stage_libs() {
	local bin=$1 out line path
	out=$(env -u LD_LIBRARY_PATH ldd "$bin" 2>&1) || {
		grep -q 'not a dynamic executable' <<<"$out" && return 0
		die "ldd $bin failed: $out"
	}
	grep -q 'statically linked' <<<"$out" && return 0
	! grep -q 'not found' <<<"$out" || die "$bin needs a library that is not found: $out"
	while IFS= read -r line; do
		# "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)", "/lib64/ld-linux-x86-64.so.2 (0x...)"
		path=$(awk '$2 == "=>" { print $3; next } $1 ~ /^\// { print $1 }' <<<"$line")
		[[ -n $path ]] || continue # linux-vdso.so.1 has no file
		local mode
		mode=$(stat -L -c %a "$path")
		stage_file "$path" "$path" "$(printf '%o' "$((8#$mode & 8#755))")"
		lib_paths+=("$path")
	done <<<"$out"
}

# make_layer ROOTFS OUT.tar: a tar of ROOTFS in name order, every entry mtime 0, owner 0:0
# except the paths in $owned (PATH=UID:GID lines).
make_layer() {
	local src=$1 dest=$2 list owner prev= first=1
	list=$(mktemp -d "$work/list.XXXX")
	(cd "$src" && find . -mindepth 1 | sed 's|^\./||' | sort) >"$list/all"
	: >"$dest"
	local chunk=0
	while IFS= read -r path; do
		owner=$(awk -F= -v p="$path" '$1 == p { print $2 }' <<<"$owned")
		owner=${owner:-0:0}
		if [[ $owner != "$prev" ]]; then
			chunk=$((chunk + 1))
			printf '%s\n' "$owner" >"$list/owner.$chunk"
			prev=$owner
		fi
		printf '%s\n' "$path" >>"$list/chunk.$chunk"
	done <"$list/all"
	local c mode
	for ((c = 1; c <= chunk; c++)); do
		owner=$(cat "$list/owner.$c")
		mode=-r
		((first)) && mode=-c first=0
		tar "$mode" -f "$dest" -C "$src" --format=ustar --no-recursion --verbatim-files-from \
			-T "$list/chunk.$c" --numeric-owner --owner="${owner%%:*}" --group="${owner##*:}" \
			--mtime=@0 --no-acls --no-xattrs --no-selinux
	done
}

# write_image NAME CONFIG_JSON OUT.tar: the OCI image layout tar for $rootfs.
write_image() {
	local name=$1 config_body=$2 dest=$3 tag=${1##*:}
	local layout=$work/layout blobs=$work/layout/blobs/sha256
	mkdir -p "$blobs"
	say "layer: $(cd "$rootfs" && find . -type f | wc -l) files, $(du -sh "$rootfs" | cut -f1)"
	make_layer "$rootfs" "$work/layer.tar"
	local diff_id
	diff_id=$(sha256 "$work/layer.tar")
	gzip -n -c "$work/layer.tar" >"$work/layer.tar.gz"
	local layer_digest layer_size
	layer_digest=$(sha256 "$work/layer.tar.gz")
	layer_size=$(size_of "$work/layer.tar.gz")
	mv "$work/layer.tar.gz" "$blobs/$layer_digest"

	printf '{"architecture":"amd64","os":"linux","config":%s,"rootfs":{"type":"layers","diff_ids":["sha256:%s"]},"history":[{"created_by":"tests/image/build.sh"}]}' \
		"$config_body" "$diff_id" >"$work/config.json"
	local config_digest config_size
	config_digest=$(sha256 "$work/config.json")
	config_size=$(size_of "$work/config.json")
	mv "$work/config.json" "$blobs/$config_digest"

	printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:%s","size":%s}]}' \
		"$config_digest" "$config_size" "$layer_digest" "$layer_size" >"$work/manifest.json"
	manifest_digest=$(sha256 "$work/manifest.json")
	local manifest_size
	manifest_size=$(size_of "$work/manifest.json")
	mv "$work/manifest.json" "$blobs/$manifest_digest"

	printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"platform":{"architecture":"amd64","os":"linux"},"annotations":{"io.containerd.image.name":%s,"org.opencontainers.image.ref.name":%s}}]}' \
		"$manifest_digest" "$manifest_size" "$(json_str "$name")" "$(json_str "$tag")" >"$layout/index.json"
	printf '{"imageLayoutVersion":"1.0.0"}' >"$layout/oci-layout"

	chmod 0755 "$layout" "$layout/blobs" "$blobs"
	chmod 0644 "$layout/index.json" "$layout/oci-layout" "$blobs"/*
	(cd "$layout" && find . -mindepth 1 | sed 's|^\./||' | sort) >"$work/layout.list"
	tar -cf "$dest.tmp" -C "$layout" --format=ustar --no-recursion --verbatim-files-from \
		-T "$work/layout.list" --numeric-owner --owner=0 --group=0 --mtime=@0
	mv "$dest.tmp" "$dest"
}

# --- main ---------------------------------------------------------------------------------------
mkdir -p "$out"
out=$(cd "$out" && pwd)
app_version=$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' "$repo/charts/vx11/Chart.yaml")
[[ -n $app_version ]] || die "no appVersion in charts/vx11/Chart.yaml"

if [[ -n $pause_bin ]]; then
	[[ -f $pause_bin && -x $pause_bin ]] || die "$pause_bin is not an executable file"
	pause_bin=$(cd "$(dirname "$pause_bin")" && pwd)/$(basename "$pause_bin")
	image=$PAUSE_IMAGE
	dest=$out/vx11-pause-image.tar
	inputs=("$pause_bin")
else
	parse_dockerfile
	image=docker.io/library/vx11:$app_version
	dest=$out/vx11-image.tar
	if [[ -z ${CARGO_TARGET_DIR:-} ]]; then
		key=$(rustc --version | sha256sum | cut -c1-12)
		export CARGO_TARGET_DIR="${VX11_CACHE_DIR:-$HOME/.cache/vx11}/cargo-target-$key"
	fi
	bin_args=()
	for b in "${df_bins[@]}"; do bin_args+=(--bin "$b"); done
	say "cargo build --release --locked ${bin_args[*]} (CARGO_TARGET_DIR=$CARGO_TARGET_DIR)"
	build_start=$SECONDS
	# Run from `cargo test`, this script inherits the variables cargo sets for the test process
	# (CARGO_MANIFEST_DIR, CARGO_PKG_NAME, ...). Build scripts such as ring's name them in
	# rerun-if-env-changed, so with them the release build would be redone whenever it is run
	# from a test after a shell, and the other way round (4+ minutes each time): drop them.
	(
		for v in $(compgen -v CARGO_PKG_) $(compgen -v CARGO_MANIFEST_) CARGO_CRATE_NAME CARGO_BIN_NAME \
			CARGO_PRIMARY_PACKAGE CARGO_TARGET_TMPDIR OUT_DIR; do
			unset "$v"
		done
		cd "$repo" && ${CARGO:-cargo} build --release --locked "${bin_args[@]}"
	) >&2 || die "cargo build failed"
	say "cargo build: $((SECONDS - build_start)) s"
	inputs=()
	for b in "${df_bins[@]}"; do inputs+=("$CARGO_TARGET_DIR/release/$b"); done
fi

# One assembly at a time per output directory; the second waits and then finds the cache.
exec 9>"$out/.lock"
if command -v flock >/dev/null; then
	flock -n 9 || { say "another assembly in $out is running; waiting for it"; flock 9; }
fi

# The cache key: every input file's hash (binaries and the libraries ldd resolves), what the
# Dockerfile says, the image name and this script.
key_file=$dest.key
key=$(
	{
		# Contents and in-image names only: the same inputs give the same key from any path.
		for f in "${inputs[@]}"; do
			printf '%s %s\n' "$(sha256 "$f")" "$(basename "$f")"
			env -u LD_LIBRARY_PATH ldd "$f" 2>/dev/null | awk '$2 == "=>" { print $3; next } $1 ~ /^\// { print $1 }' |
				while read -r lib; do printf '%s %s\n' "$(sha256 "$(readlink -f "$lib")")" "$lib"; done
		done
		printf '%s\n' "$image"
		[[ -n $pause_bin ]] || declare -p df_user df_workdir df_entrypoint df_cmd df_copy_dest df_env df_ports df_bins
		sha256 "${BASH_SOURCE[0]}"
	} | sha256sum | cut -c1-64
)
if [[ ${VX11_REBUILD:-} != 1 && -f $dest && -f $key_file && $(cat "$key_file") == "$key" ]]; then
	say "cached: $dest ($image)"
	echo "$dest"
	exit 0
fi

work=$(mktemp -d "$out/.work.XXXXXX")
trap 'rm -rf "$work"' EXIT
rootfs=$work/rootfs
mkdir -p "$rootfs"
lib_paths=()
owned=

if [[ -n $pause_bin ]]; then
	stage_file "$pause_bin" /pause 0755
	stage_libs "$pause_bin"
	config='{"User":"65535:65535","Env":['"$(json_str "PATH=$BASE_PATH")"'],"Entrypoint":["/pause"],"WorkingDir":"/"}'
else
	for b in "${df_bins[@]}"; do
		stage_file "$CARGO_TARGET_DIR/release/$b" "$df_copy_dest/$b" 0755
		stage_libs "$CARGO_TARGET_DIR/release/$b"
	done
	mkdir -p "$rootfs/etc" "$rootfs/tmp" "$rootfs$BASE_WORKDIR"
	printf '%s\n' "$BASE_PASSWD" >"$rootfs/etc/passwd"
	printf '%s\n' "$BASE_GROUP" >"$rootfs/etc/group"
	chmod 0644 "$rootfs/etc/passwd" "$rootfs/etc/group"
	chmod 0700 "$rootfs$BASE_WORKDIR"
	owned="${BASE_WORKDIR#/}=65532:65532"
	if [[ $df_workdir != "$BASE_WORKDIR" ]]; then mkdir -p "$rootfs$df_workdir"; fi

	env_json= ports_json= sep=
	for e in "${df_env[@]}"; do env_json+=$sep$(json_str "$e") sep=,; done
	sep=
	while IFS= read -r p; do
		[[ -n $p ]] || continue
		[[ $p == */* ]] || p=$p/tcp
		ports_json+=$sep$(json_str "$p")':{}' sep=,
	done < <(printf '%s\n' "${df_ports[@]}" | sort -n -u)
	config='{"User":'"$(json_str "$df_user")"',"ExposedPorts":{'"$ports_json"'},"Env":['"$env_json"']'
	[[ -z $df_entrypoint ]] || config+=',"Entrypoint":'"$df_entrypoint"
	[[ -z $df_cmd ]] || config+=',"Cmd":'"$df_cmd"
	config+=',"WorkingDir":'"$(json_str "$df_workdir")"'}'
fi
# Every directory 0755 but the ones set above; /tmp 1777.
find "$rootfs" -type d ! -path "$rootfs$BASE_WORKDIR" -exec chmod 0755 {} +
[[ ! -d $rootfs/tmp ]] || chmod 1777 "$rootfs/tmp"

say "assembling $image"
write_image "$image" "$config" "$dest"
printf '%s\n' "$key" >"$key_file"
say "wrote $dest ($(size_of "$dest") bytes, manifest sha256:$manifest_digest)"
echo "$dest"
