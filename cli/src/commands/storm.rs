use std::io::IsTerminal;
use std::net::SocketAddr;
use std::process::ExitCode;

use anyhow::{Context, bail};
use loadlab_loadgen::http::RequestTemplate;
use loadlab_loadgen::storm::Pacing;
use loadlab_loadgen::{CloseMode, HandshakeAck, StormConfig, run_storm};

use crate::args::{CloseArg, HandshakeAckArg, StormArgs};
use crate::commands::interrupt_token;
use crate::{INTERRUPTED, render};

/// An `http://host[:port][/path]` URL split into what a storm needs.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct HttpUrl {
    pub host: String,
    pub port: u16,
    pub path: String,
}

pub(crate) fn parse_http_url(url: &str) -> anyhow::Result<HttpUrl> {
    let Some(rest) = url.strip_prefix("http://") else {
        if url.starts_with("https://") {
            bail!("{url}: https is not supported; storm a plain http:// endpoint");
        }
        bail!("{url}: expected a URL such as http://127.0.0.1:8080/");
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
        let (host, after) = bracketed
            .split_once(']')
            .with_context(|| format!("{url}: unclosed [ in the host"))?;
        (host, after.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        bail!("{url}: the URL has no host");
    }
    let port = match port {
        Some(port) => port
            .parse()
            .with_context(|| format!("{url}: invalid port {port:?}"))?,
        None => 80,
    };
    Ok(HttpUrl {
        host: host.to_string(),
        port,
        path: path.to_string(),
    })
}

pub async fn run(args: StormArgs) -> anyhow::Result<ExitCode> {
    let url = parse_http_url(&args.url)?;
    let target: SocketAddr = tokio::net::lookup_host((url.host.as_str(), url.port))
        .await
        .with_context(|| format!("cannot resolve {}", url.host))?
        .next()
        .with_context(|| format!("{} has no address", url.host))?;
    let headers = args
        .headers
        .iter()
        .map(|header| {
            header
                .split_once(':')
                .map(|(name, value)| (name.trim().to_string(), value.trim().to_string()))
                .with_context(|| format!("header {header:?} must look like `Name: value`"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let config = StormConfig {
        target,
        request: RequestTemplate {
            method: args.method.clone(),
            path: url.path.clone(),
            host: args.host.clone().unwrap_or_else(|| {
                if url.port == 80 {
                    url.host.clone()
                } else {
                    format!("{}:{}", url.host, url.port)
                }
            }),
            headers,
        },
        requests_per_connection: args.requests_per_connection,
        connections: args.connections,
        pacing: match args.rate {
            Some(per_second) => Pacing::Open { per_second },
            None => Pacing::Closed,
        },
        warmup: args.warmup.0,
        duration: args.duration.0,
        connect_timeout: args.connect_timeout.0,
        response_timeout: args.response_timeout.0,
        cpus: args.cpus.clone().map(|list| list.0).unwrap_or_default(),
        source_addrs: args.source_addrs.clone(),
        threads: args.threads,
        start_at: None,
        close: match args.close {
            CloseArg::Fin => CloseMode::Fin,
            CloseArg::Reset => CloseMode::Reset,
        },
        handshake_ack: match args.handshake_ack {
            HandshakeAckArg::Separate => HandshakeAck::Separate,
            HandshakeAckArg::WithRequest => HandshakeAck::WithRequest,
        },
    };
    config.validate()?;
    let cancel = interrupt_token();
    let live = !args.json && std::io::stderr().is_terminal();
    let length = args.warmup.0 + args.duration.0;
    let report = run_storm(&config, cancel.clone(), |progress| {
        if live {
            render::storm_progress(&progress, length, args.warmup.0);
        }
    })
    .await?;
    if live {
        render::clear_line();
    }
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&render::storm_json(&report))?
        );
    } else {
        print!("{}", render::storm_text(&args.url, &config, &report));
    }
    Ok(if cancel.is_cancelled() {
        ExitCode::from(INTERRUPTED)
    } else {
        ExitCode::SUCCESS
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(host: &str, port: u16, path: &str) -> HttpUrl {
        HttpUrl {
            host: host.into(),
            port,
            path: path.into(),
        }
    }

    #[test]
    fn urls_split_into_host_port_and_path() {
        assert_eq!(
            parse_http_url("http://127.0.0.1:8080/").unwrap(),
            url("127.0.0.1", 8080, "/")
        );
        assert_eq!(
            parse_http_url("http://localhost").unwrap(),
            url("localhost", 80, "/")
        );
        assert_eq!(
            parse_http_url("http://[::1]:81/a?b").unwrap(),
            url("::1", 81, "/a?b")
        );
    }

    #[test]
    fn bad_urls_say_why() {
        for (bad, says) in [
            ("https://x/", "https is not supported"),
            ("127.0.0.1:80", "expected a URL"),
            ("http://:80/", "no host"),
            ("http://h:port/", "invalid port"),
            ("http://[::1/", "unclosed"),
        ] {
            let error = parse_http_url(bad).unwrap_err().to_string();
            assert!(error.contains(says), "{bad}: {error}");
        }
    }
}
