# syntax=docker/dockerfile:1
# Multi-stage: build with the Rust toolchain, ship only the binary on a
# distroless base that runs as a non-root user.

FROM rust:1.95-bookworm AS build
WORKDIR /src
# Dependencies first, so that source edits do not rebuild them.
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src benches && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
    && echo 'fn main() {}' > benches/relabel.rs \
    && sed -i '/^\[\[test\]\]/,/^$/d' Cargo.toml \
    && cargo build --release --locked --bin matrixinfer-runtime \
    && rm -rf src benches
COPY . .
RUN touch src/main.rs src/lib.rs \
    && cargo build --release --locked --bin matrixinfer-runtime \
    && cp target/release/matrixinfer-runtime /matrixinfer-runtime

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /matrixinfer-runtime /usr/local/bin/matrixinfer-runtime
USER nonroot:nonroot
EXPOSE 9000
ENTRYPOINT ["/usr/local/bin/matrixinfer-runtime"]
