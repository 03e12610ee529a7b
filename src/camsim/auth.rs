//! RTSP authentication for the camera simulator: Basic and Digest, either
//! accepted, like the IP cameras Cradle has to talk to.
//!
//! RTSP borrows HTTP authentication (RFC 2326 §11.2 → RFC 2617). A 401 offers
//! both challenges; clients such as retina and ffmpeg pick Digest. Digest is
//! offered without `qop` (the RFC 2069 form many cameras use) but answers that
//! carry `qop=auth` are verified too. There is one server-wide nonce: this is
//! a test fixture, not a security boundary, so replay protection is moot.
//!
//! The crate has no base64 or MD5 dependency, so both live here (base64 is
//! also used by `clip.rs` for `sprop-parameter-sets`).

use rand::Rng;

pub(crate) const REALM: &str = "cradle-camsim";

pub(crate) struct Auth {
    username: String,
    password: String,
    nonce: String,
}

impl Auth {
    pub(crate) fn new(username: String, password: String) -> Self {
        let nonce: [u8; 16] = rand::rng().random();
        Auth {
            username,
            password,
            nonce: hex(&nonce),
        }
    }

    /// `WWW-Authenticate` header values for a 401, strongest first.
    pub(crate) fn challenges(&self) -> [String; 2] {
        [
            format!(
                "Digest realm=\"{REALM}\", nonce=\"{}\", algorithm=MD5",
                self.nonce
            ),
            format!("Basic realm=\"{REALM}\""),
        ]
    }

    /// Checks an `Authorization` header value for a request using `method`.
    pub(crate) fn check(&self, method: &str, authorization: Option<&str>) -> bool {
        let Some(value) = authorization.map(str::trim) else {
            return false;
        };
        let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
        if scheme.eq_ignore_ascii_case("basic") {
            self.check_basic(rest.trim())
        } else if scheme.eq_ignore_ascii_case("digest") {
            self.check_digest(method, rest)
        } else {
            false
        }
    }

    fn check_basic(&self, token: &str) -> bool {
        let Some(decoded) = base64_decode(token) else {
            return false;
        };
        let expected = format!("{}:{}", self.username, self.password);
        decoded == expected.as_bytes()
    }

    /// RFC 2617 §3.2.2: response = MD5(HA1:nonce[:nc:cnonce:qop]:HA2) with
    /// HA1 = MD5(user:realm:password) and HA2 = MD5(method:digest-uri).
    fn check_digest(&self, method: &str, params: &str) -> bool {
        let params = parse_params(params);
        let get = |name: &str| {
            params
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        };
        let (Some(user), Some(realm), Some(nonce), Some(uri), Some(response)) = (
            get("username"),
            get("realm"),
            get("nonce"),
            get("uri"),
            get("response"),
        ) else {
            return false;
        };
        if user != self.username || realm != REALM || nonce != self.nonce {
            return false;
        }
        if get("algorithm").is_some_and(|a| !a.eq_ignore_ascii_case("md5")) {
            return false;
        }
        let ha1 = md5_hex(format!("{user}:{REALM}:{}", self.password).as_bytes());
        let ha2 = md5_hex(format!("{method}:{uri}").as_bytes());
        let expected = match get("qop") {
            None => md5_hex(format!("{ha1}:{nonce}:{ha2}").as_bytes()),
            Some(qop) if qop.eq_ignore_ascii_case("auth") => {
                let (Some(nc), Some(cnonce)) = (get("nc"), get("cnonce")) else {
                    return false;
                };
                md5_hex(format!("{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}").as_bytes())
            }
            Some(_) => return false,
        };
        response.eq_ignore_ascii_case(&expected)
    }
}

/// Splits `a="x, y", b=z` into pairs, honouring quoted strings (RFC 2617 §1.2).
fn parse_params(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = s;
    loop {
        rest = rest.trim_start_matches(|c: char| c == ',' || c.is_ascii_whitespace());
        let Some(eq) = rest.find('=') else { return out };
        let name = rest[..eq].trim().to_string();
        rest = rest[eq + 1..].trim_start();
        let value;
        if let Some(quoted) = rest.strip_prefix('"') {
            let mut v = String::new();
            let mut chars = quoted.char_indices();
            let mut end = quoted.len();
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, n)) = chars.next() {
                            v.push(n);
                        }
                    }
                    '"' => {
                        end = i + 1;
                        break;
                    }
                    c => v.push(c),
                }
            }
            value = v;
            rest = &quoted[end.min(quoted.len())..];
        } else {
            let end = rest.find(',').unwrap_or(rest.len());
            value = rest[..end].trim().to_string();
            rest = &rest[end..];
        }
        out.push((name, value));
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

fn md5_hex(data: &[u8]) -> String {
    hex(&md5(data))
}

/// MD5 per RFC 1321 §3. Only used for Digest auth on a handful of requests.
fn md5(data: &[u8]) -> [u8; 16] {
    const S: [u32; 64] = [
        7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 5, 9, 14, 20, 5, 9, 14, 20, 5,
        9, 14, 20, 5, 9, 14, 20, 4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, 6, 10,
        15, 21, 6, 10, 15, 21, 6, 10, 15, 21, 6, 10, 15, 21,
    ];
    const K: [u32; 64] = [
        0xd76aa478, 0xe8c7b756, 0x242070db, 0xc1bdceee, 0xf57c0faf, 0x4787c62a, 0xa8304613,
        0xfd469501, 0x698098d8, 0x8b44f7af, 0xffff5bb1, 0x895cd7be, 0x6b901122, 0xfd987193,
        0xa679438e, 0x49b40821, 0xf61e2562, 0xc040b340, 0x265e5a51, 0xe9b6c7aa, 0xd62f105d,
        0x02441453, 0xd8a1e681, 0xe7d3fbc8, 0x21e1cde6, 0xc33707d6, 0xf4d50d87, 0x455a14ed,
        0xa9e3e905, 0xfcefa3f8, 0x676f02d9, 0x8d2a4c8a, 0xfffa3942, 0x8771f681, 0x6d9d6122,
        0xfde5380c, 0xa4beea44, 0x4bdecfa9, 0xf6bb4b60, 0xbebfbc70, 0x289b7ec6, 0xeaa127fa,
        0xd4ef3085, 0x04881d05, 0xd9d4d039, 0xe6db99e5, 0x1fa27cf8, 0xc4ac5665, 0xf4292244,
        0x432aff97, 0xab9423a7, 0xfc93a039, 0x655b59c3, 0x8f0ccc92, 0xffeff47d, 0x85845dd1,
        0x6fa87e4f, 0xfe2ce6e0, 0xa3014314, 0x4e0811a1, 0xf7537e82, 0xbd3af235, 0x2ad7d2bb,
        0xeb86d391,
    ];
    let mut msg = data.to_vec();
    msg.push(0x80);
    while msg.len() % 64 != 56 {
        msg.push(0);
    }
    msg.extend_from_slice(&((data.len() as u64).wrapping_mul(8)).to_le_bytes());

    let mut st = [0x67452301u32, 0xefcdab89, 0x98badcfe, 0x10325476];
    for chunk in msg.chunks_exact(64) {
        let m: Vec<u32> = chunk
            .chunks_exact(4)
            .map(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]]))
            .collect();
        let [mut a, mut b, mut c, mut d] = st;
        for i in 0..64 {
            let (f, g) = match i / 16 {
                0 => ((b & c) | (!b & d), i),
                1 => ((d & b) | (!d & c), (5 * i + 1) % 16),
                2 => (b ^ c ^ d, (3 * i + 5) % 16),
                _ => (c ^ (b | !d), (7 * i) % 16),
            };
            let f = f.wrapping_add(a).wrapping_add(K[i]).wrapping_add(m[g]);
            a = d;
            d = c;
            c = b;
            b = b.wrapping_add(f.rotate_left(S[i]));
        }
        for (s, v) in st.iter_mut().zip([a, b, c, d]) {
            *s = s.wrapping_add(v);
        }
    }
    let mut out = [0u8; 16];
    for (o, s) in out.chunks_exact_mut(4).zip(st) {
        o.copy_from_slice(&s.to_le_bytes());
    }
    out
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard padded base64 (RFC 4648 §4), as `sprop-parameter-sets` and
/// Basic credentials use.
pub(crate) fn base64_encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let n = (u32::from(chunk[0]) << 16)
            | (u32::from(*chunk.get(1).unwrap_or(&0)) << 8)
            | u32::from(*chunk.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(B64[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let s = s.trim_end_matches('=');
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.bytes() {
        let v = B64.iter().position(|&b| b == c)? as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn md5_vectors() {
        assert_eq!(md5_hex(b""), "d41d8cd98f00b204e9800998ecf8427e");
        assert_eq!(md5_hex(b"abc"), "900150983cd24fb0d6963f7d28e17f72");
        assert_eq!(
            md5_hex(b"The quick brown fox jumps over the lazy dog"),
            "9e107d9d372bb6826bd81d3542a419d6"
        );
        // 80 bytes: padding spills into a second block.
        assert_eq!(
            md5_hex(
                b"12345678901234567890123456789012345678901234567890123456789012345678901234567890"
            ),
            "57edf4a22be3c955ac49da2e2107b67a"
        );
    }

    #[test]
    fn base64_roundtrip() {
        assert_eq!(
            base64_encode(b"Aladdin:open sesame"),
            "QWxhZGRpbjpvcGVuIHNlc2FtZQ=="
        );
        assert_eq!(base64_encode(b""), "");
        assert_eq!(base64_encode(b"f"), "Zg==");
        assert_eq!(base64_encode(b"fo"), "Zm8=");
        assert_eq!(base64_encode(b"foo"), "Zm9v");
        assert_eq!(base64_encode(&[0xfb, 0xff]), "+/8=");
        for len in 0..40u8 {
            let data: Vec<u8> = (0..len).map(|i| i.wrapping_mul(37)).collect();
            assert_eq!(base64_decode(&base64_encode(&data)).unwrap(), data);
        }
        assert_eq!(base64_decode("not*base64"), None);
    }

    fn auth() -> Auth {
        Auth {
            username: "Mufasa".into(),
            password: "Circle Of Life".into(),
            nonce: "abc".into(),
        }
    }

    #[test]
    fn basic() {
        let a = auth();
        let good = format!("Basic {}", base64_encode(b"Mufasa:Circle Of Life"));
        assert!(a.check("DESCRIBE", Some(&good)));
        let bad = format!("Basic {}", base64_encode(b"Mufasa:wrong"));
        assert!(!a.check("DESCRIBE", Some(&bad)));
        assert!(!a.check("DESCRIBE", None));
        assert!(!a.check("DESCRIBE", Some("Bearer x")));
        assert!(!a.check("DESCRIBE", Some("Basic")));
    }

    #[test]
    fn digest_without_qop() {
        let a = auth();
        let ha1 = md5_hex(format!("Mufasa:{REALM}:Circle Of Life").as_bytes());
        let ha2 = md5_hex(b"DESCRIBE:rtsp://h/cam1");
        let resp = md5_hex(format!("{ha1}:abc:{ha2}").as_bytes());
        let hdr = format!(
            "Digest username=\"Mufasa\", realm=\"{REALM}\", nonce=\"abc\", \
             uri=\"rtsp://h/cam1\", response=\"{resp}\""
        );
        assert!(a.check("DESCRIBE", Some(&hdr)));
        assert!(!a.check("SETUP", Some(&hdr)), "method is part of HA2");
        assert!(
            !a.check("DESCRIBE", Some(&hdr.replace("abc", "abd"))),
            "stale nonce"
        );
    }

    #[test]
    fn digest_rfc2617_example_with_qop() {
        // RFC 2617 §3.5, with our realm/nonce substituted into the same formula.
        let a = Auth {
            username: "Mufasa".into(),
            password: "Circle Of Life".into(),
            nonce: "dcd98b7102dd2f0e8b11d0f600bfb0c093".into(),
        };
        let ha1 = md5_hex(format!("Mufasa:{REALM}:Circle Of Life").as_bytes());
        let ha2 = md5_hex(b"GET:/dir/index.html");
        let resp = md5_hex(
            format!("{ha1}:dcd98b7102dd2f0e8b11d0f600bfb0c093:00000001:0a4f113b:auth:{ha2}")
                .as_bytes(),
        );
        let hdr = format!(
            "Digest username=\"Mufasa\", realm=\"{REALM}\", \
             nonce=\"dcd98b7102dd2f0e8b11d0f600bfb0c093\", uri=\"/dir/index.html\", qop=auth, \
             nc=00000001, cnonce=\"0a4f113b\", response=\"{resp}\", opaque=\"x,y\""
        );
        assert!(a.check("GET", Some(&hdr)));
        // The published example's value, with the published realm, checks the MD5 chain.
        let ha1 = md5_hex(b"Mufasa:testrealm@host.com:Circle Of Life");
        let r = md5_hex(
            format!("{ha1}:dcd98b7102dd2f0e8b11d0f600bfb0c093:00000001:0a4f113b:auth:{ha2}")
                .as_bytes(),
        );
        assert_eq!(r, "6629fae49393a05397450978507c4ef1");
    }

    #[test]
    fn params_with_quotes_and_escapes() {
        let p = parse_params(r#"a="x, y", b=z,c="q\"r""#);
        assert_eq!(
            p,
            vec![
                ("a".into(), "x, y".into()),
                ("b".into(), "z".into()),
                ("c".into(), "q\"r".into())
            ]
        );
        assert!(parse_params("garbage").is_empty());
        assert_eq!(
            parse_params(r#"a="unterminated"#),
            vec![("a".into(), "unterminated".into())]
        );
    }
}
