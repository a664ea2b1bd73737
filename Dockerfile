# syntax=docker/dockerfile:1
# Multi-stage: build the example WASM filters and the binary with the Rust
# toolchain, ship only those on a distroless base that runs as a non-root
# user.

FROM rust:1.95-bookworm AS filters
WORKDIR /src
RUN rustup target add wasm32-unknown-unknown
COPY crates crates
COPY sdk sdk
COPY wasm-filters wasm-filters
RUN cargo build --release --locked --target wasm32-unknown-unknown --manifest-path wasm-filters/Cargo.toml \
    && mkdir /filters \
    && cp wasm-filters/target/wasm32-unknown-unknown/release/add_labels.wasm \
          wasm-filters/target/wasm32-unknown-unknown/release/drop.wasm \
          wasm-filters/target/wasm32-unknown-unknown/release/rename_prefix.wasm \
          wasm-filters/target/wasm32-unknown-unknown/release/mean_gauge.wasm /filters/

FROM rust:1.95-bookworm AS build
# ISA-L (the gzip encoder) is built from source: autotools, and nasm for
# its x86 kernels (scripts/build-deps).
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends nasm autoconf automake libtool make \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# Dependencies first, so that source edits do not rebuild them: a stub
# crate with the test and bench targets taken out of the manifest (their
# sources are not here yet). tests/cli.rs runs this step's commands.
COPY Cargo.toml Cargo.lock ./
COPY crates crates
RUN mkdir -p src && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
    && sed -i '/^\[\[test\]\]/,/^$/d; /^\[\[bench\]\]/,/^$/d' Cargo.toml \
    && cargo build --release --locked --bin matrixinfer-runtime \
    && rm -rf src
COPY . .
RUN touch src/main.rs src/lib.rs \
    && cargo build --release --locked --bin matrixinfer-runtime \
    && cp target/release/matrixinfer-runtime /matrixinfer-runtime

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /matrixinfer-runtime /usr/local/bin/matrixinfer-runtime
# The example filters, for --filter /usr/local/share/matrixinfer/filters/<name>.wasm
COPY --from=filters /filters /usr/local/share/matrixinfer/filters
USER nonroot:nonroot
EXPOSE 9000
ENTRYPOINT ["/usr/local/bin/matrixinfer-runtime"]
