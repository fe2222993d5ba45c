//! `--filter`: the `ss` filter language compiled into inet_diag bytecode.
//!
//! The kernel runs the program (`INET_DIAG_REQ_BYTECODE`) on every socket
//! before it builds a reply, so a filter that keeps 1% of the sockets saves
//! the kernel 99% of the reply work and us 99% of the decoding. This module
//! owns the grammar (a subset of iproute2's `ssfilter`: states are
//! `--states`' business), the parse errors (with the column and token), and
//! the compiler. It does not send anything: [`Bytecode`] rides on every
//! [`super::DumpRequest`].
//!
//! # The kernel's program model (`net/ipv4/inet_diag.c`)
//! A program is a sequence of `struct inet_diag_bc_op { u8 code; u8 yes;
//! u16 no; }`, some followed by an operand. Each op evaluates a condition
//! and advances by `yes` bytes when it holds, by `no` bytes when not. The
//! socket is kept when the program counter lands exactly on its end, and
//! dropped when it lands 4 bytes past it. `inet_diag_bc_audit` refuses a
//! program unless walking the `yes` offsets from the start reaches the end
//! exactly and every `no` lands on an op boundary (or on the end, or 4
//! past it). So, like `ss`, every op's `yes` is its own length (fall
//! through) and control flow is carried by `no` jumps, which are always
//! forward; `JMP` is an op whose condition is always false.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

/// `enum` of `include/uapi/linux/inet_diag.h` (`INET_DIAG_BC_*`).
mod code {
    pub const NOP: u8 = 0;
    pub const JMP: u8 = 1;
    pub const S_GE: u8 = 2;
    pub const S_LE: u8 = 3;
    pub const D_GE: u8 = 4;
    pub const D_LE: u8 = 5;
    pub const S_COND: u8 = 7;
    pub const D_COND: u8 = 8;
    pub const MARK_COND: u8 = 10;
}

/// `INET_DIAG_REQ_BYTECODE`: the request attribute carrying the program.
pub const INET_DIAG_REQ_BYTECODE: u16 = 1;
const AF_UNSPEC: u8 = 0;
const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;
/// `op->no` is a u16 and the attribute's `nla_len` too: a longer program
/// cannot be expressed, and no sensible filter comes near it.
pub const MAX_BYTECODE_LEN: usize = 60_000;
/// `sizeof(struct inet_diag_bc_op)`.
const OP_LEN: usize = 4;

/// A compiled filter program, shared by every dump request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bytecode(Arc<[u8]>);

impl Bytecode {
    /// The program's bytes as the kernel reads them.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

/// Which end of the connection a condition looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// `src`/`sport`: the local end.
    Source,
    /// `dst`/`dport`: the remote end.
    Destination,
}

/// An address prefix with an optional port (`inet_diag_hostcond`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostCond {
    /// `None`: any family (a port-only condition such as `:443`).
    pub addr: Option<(IpAddr, u8)>,
    pub port: Option<u16>,
}

/// A port comparison the kernel has an op for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortCmp {
    Ge,
    Le,
}

/// The parsed expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expr {
    Host(End, HostCond),
    Port(End, PortCmp, u16),
    /// `fwmark = MARK[/MASK]`: `(sk_mark & mask) == mark`
    /// (`INET_DIAG_BC_MARK_COND`; the kernel wants CAP_NET_ADMIN for it).
    Mark {
        mark: u32,
        mask: u32,
    },
    Not(Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
}

/// Why a filter expression was refused; column is 1-based, in characters.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    #[error("--filter: {problem} at column {column}: {token:?}")]
    Syntax {
        column: usize,
        token: String,
        problem: &'static str,
    },
    #[error("--filter: unexpected end of expression: {0}")]
    UnexpectedEnd(&'static str),
    #[error("--filter: the compiled program is {0} bytes, above the kernel's limit of {MAX_BYTECODE_LEN}")]
    TooLong(usize),
}

#[derive(Debug, Clone)]
struct Token<'a> {
    text: &'a str,
    column: usize,
}

/// Splits like ss: whitespace separates words; parentheses and `!` (when
/// not part of `!=`) are tokens of their own.
fn tokenize(input: &str) -> Vec<Token<'_>> {
    let mut tokens = Vec::new();
    let mut start: Option<usize> = None;
    let column_of = |byte: usize| input[..byte].chars().count() + 1;
    let mut chars = input.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        let single = c == '(' || c == ')' || (c == '!' && chars.peek().map(|&(_, n)| n) != Some('='));
        if c.is_whitespace() || single {
            if let Some(s) = start.take() {
                tokens.push(Token {
                    text: &input[s..i],
                    column: column_of(s),
                });
            }
            if single {
                tokens.push(Token {
                    text: &input[i..i + 1],
                    column: column_of(i),
                });
            }
        } else if start.is_none() {
            start = Some(i);
        }
        if c == '!' && !single {
            // `!=`: keep the `=` in the same word.
            if let Some((_, '=')) = chars.peek() {
                chars.next();
            }
        }
    }
    if let Some(s) = start {
        tokens.push(Token {
            text: &input[s..],
            column: column_of(s),
        });
    }
    tokens
}

/// Comparison operators and their word forms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Eq,
    Ne,
    Lt,
    Gt,
    Le,
    Ge,
}

fn operator(word: &str) -> Option<Op> {
    Some(match word {
        "=" | "==" | "eq" => Op::Eq,
        "!=" | "neq" | "ne" => Op::Ne,
        "<" | "lt" => Op::Lt,
        ">" | "gt" => Op::Gt,
        "<=" | "le" => Op::Le,
        ">=" | "ge" => Op::Ge,
        _ => return None,
    })
}

/// Parentheses and `not`s nested deeper than this are refused: the parser
/// and the compiler recurse, and argv can hold 100,000 `(`s.
const MAX_NESTING: usize = 64;
/// Conditions past this are refused before compiling: even the smallest
/// op would overflow `MAX_BYTECODE_LEN` long before, and the left-leaning
/// tree the compiler walks stays shallow enough for any thread's stack.
const MAX_CONDITIONS: usize = 2_000;

struct Parser<'a> {
    tokens: Vec<Token<'a>>,
    pos: usize,
    depth: usize,
    conditions: usize,
}

fn syntax(token: &Token<'_>, problem: &'static str) -> FilterError {
    FilterError::Syntax {
        column: token.column,
        token: token.text.to_string(),
        problem,
    }
}

impl<'a> Parser<'a> {
    fn peek(&self) -> Option<&Token<'a>> {
        self.tokens.get(self.pos)
    }

    fn next(&mut self, expected: &'static str) -> Result<Token<'a>, FilterError> {
        let t = self
            .tokens
            .get(self.pos)
            .cloned()
            .ok_or(FilterError::UnexpectedEnd(expected))?;
        self.pos += 1;
        Ok(t)
    }

    /// list := unary (("or" | "||" | "|" | "and" | "&&" | "&")? unary)*
    ///
    /// As in ss's grammar (`exprlist`), `and` and `or` have the same
    /// precedence and group from the left: `a or b and c` is
    /// `(a or b) and c`. Juxtaposed terms are joined by `and`.
    fn or(&mut self) -> Result<Expr, FilterError> {
        let mut left = self.unary()?;
        while let Some(t) = self.peek() {
            let or = match t.text {
                ")" => break,
                "or" | "||" | "|" => true,
                "and" | "&&" | "&" => false,
                _ => {
                    let right = self.unary()?;
                    left = Expr::And(Box::new(left), Box::new(right));
                    continue;
                }
            };
            self.pos += 1;
            let right = self.unary()?;
            left = if or {
                Expr::Or(Box::new(left), Box::new(right))
            } else {
                Expr::And(Box::new(left), Box::new(right))
            };
        }
        Ok(left)
    }

    /// unary := ("not" | "!") unary | "(" or ")" | term
    fn unary(&mut self) -> Result<Expr, FilterError> {
        let t = self.next("expected a condition such as `dport = :443`")?;
        if matches!(t.text, "not" | "!" | "(") {
            self.depth += 1;
            if self.depth > MAX_NESTING {
                return Err(syntax(&t, "nested too deeply (at most 64 levels of `(` and `not`)"));
            }
        } else {
            self.conditions += 1;
            if self.conditions > MAX_CONDITIONS {
                return Err(syntax(&t, "too many conditions (at most 2000)"));
            }
        }
        let result = self.unary_after(t);
        self.depth = self.depth.saturating_sub(1);
        result
    }

    fn unary_after(&mut self, t: Token<'a>) -> Result<Expr, FilterError> {
        match t.text {
            "not" | "!" => Ok(Expr::Not(Box::new(self.unary()?))),
            "(" => {
                let inner = self.or()?;
                let close = self.next("expected `)`")?;
                if close.text != ")" {
                    return Err(syntax(&close, "expected `)`"));
                }
                Ok(inner)
            }
            "sport" | "dport" => {
                let end = if t.text == "sport" {
                    End::Source
                } else {
                    End::Destination
                };
                let mut value = self.next("expected a port such as `:443`")?;
                let op = match operator(value.text) {
                    Some(op) => {
                        value = self.next("expected a port such as `:443`")?;
                        op
                    }
                    None => Op::Eq,
                };
                let port = parse_port_operand(&value)?;
                Ok(port_expr(end, op, port))
            }
            "src" | "dst" => {
                let end = if t.text == "src" { End::Source } else { End::Destination };
                let mut value = self.next("expected an address such as `10.0.0.0/8`")?;
                let op = match operator(value.text) {
                    Some(op @ (Op::Eq | Op::Ne)) => {
                        value = self.next("expected an address such as `10.0.0.0/8`")?;
                        op
                    }
                    Some(_) => return Err(syntax(&value, "addresses compare only with = or !=")),
                    None => Op::Eq,
                };
                let host = parse_host(&value)?;
                let e = Expr::Host(end, host);
                Ok(if op == Op::Ne { Expr::Not(Box::new(e)) } else { e })
            }
            "fwmark" => {
                let mut value = self.next("expected a mark such as `0x1/0xff`")?;
                let op = match operator(value.text) {
                    Some(op @ (Op::Eq | Op::Ne)) => {
                        value = self.next("expected a mark such as `0x1/0xff`")?;
                        op
                    }
                    Some(_) => return Err(syntax(&value, "marks compare only with = or !=")),
                    None => Op::Eq,
                };
                let (mark, mask) = parse_mark(&value)?;
                let e = Expr::Mark { mark, mask };
                Ok(if op == Op::Ne { Expr::Not(Box::new(e)) } else { e })
            }
            ")" => Err(syntax(&t, "unbalanced `)`")),
            _ => Err(syntax(&t, "expected sport, dport, src, dst, fwmark, not, or `(`")),
        }
    }
}

/// `MARK` or `MARK/MASK`, each a C integer as ss's `%i` reads it
/// (decimal, `0x` hexadecimal, leading-`0` octal); no mask is all ones.
fn parse_mark(t: &Token<'_>) -> Result<(u32, u32), FilterError> {
    fn number(text: &str) -> Option<u32> {
        if let Some(hex) = text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
            u32::from_str_radix(hex, 16).ok()
        } else if text.len() > 1 && text.starts_with('0') {
            u32::from_str_radix(&text[1..], 8).ok()
        } else {
            text.parse().ok()
        }
    }
    let bad = || syntax(t, "expected a mark such as `0x1/0xff` (32-bit numbers)");
    match t.text.split_once('/') {
        Some((mark, mask)) => Ok((number(mark).ok_or_else(bad)?, number(mask).ok_or_else(bad)?)),
        None => Ok((number(t.text).ok_or_else(bad)?, u32::MAX)),
    }
}

/// `:N`, `*:N` or `N`, as ss accepts after `sport`/`dport`.
fn parse_port_operand(t: &Token<'_>) -> Result<u16, FilterError> {
    let digits = t
        .text
        .strip_prefix("*:")
        .or_else(|| t.text.strip_prefix(':'))
        .unwrap_or(t.text);
    digits
        .parse::<u16>()
        .map_err(|_| syntax(t, "expected a port number such as `:443`"))
}

/// The kernel ops for a port comparison: `=`/`!=` as a port-only host
/// condition (the op every kernel has), `<`/`>` as the negation of the
/// `>=`/`<=` ops, as ss compiles them.
fn port_expr(end: End, op: Op, port: u16) -> Expr {
    let eq = || {
        Expr::Host(
            end,
            HostCond {
                addr: None,
                port: Some(port),
            },
        )
    };
    match op {
        Op::Eq => eq(),
        Op::Ne => Expr::Not(Box::new(eq())),
        Op::Ge => Expr::Port(end, PortCmp::Ge, port),
        Op::Le => Expr::Port(end, PortCmp::Le, port),
        Op::Lt => Expr::Not(Box::new(Expr::Port(end, PortCmp::Ge, port))),
        Op::Gt => Expr::Not(Box::new(Expr::Port(end, PortCmp::Le, port))),
    }
}

/// `ADDR[/LEN][:PORT]`, `[V6ADDR][/LEN][:PORT]`, bare IPv6 `V6ADDR[/LEN]`,
/// `*`, `*:PORT` or `:PORT`.
fn parse_host(t: &Token<'_>) -> Result<HostCond, FilterError> {
    let bad = |problem| syntax(t, problem);
    let text = t.text;
    let (addr_part, port_part): (&str, Option<&str>) = if let Some(rest) = text.strip_prefix('[') {
        let close = rest.find(']').ok_or_else(|| bad("`[` without `]`"))?;
        let inside = &rest[..close];
        let after = &rest[close + 1..];
        // `[::1]/128:80`: a prefix may follow the bracket.
        let (prefix, port) = match after.rfind(':') {
            Some(i) => (&after[..i], Some(&after[i + 1..])),
            None => (after, None),
        };
        if !prefix.is_empty() && !prefix.starts_with('/') {
            return Err(bad("expected `/LEN` or `:PORT` after `]`"));
        }
        // Reassemble "inside/len" for the prefix parser below.
        return finish_host(t, inside, prefix.strip_prefix('/'), port, true);
    } else if text.matches(':').count() >= 2 {
        // A bare IPv6 address: its colons are not a port separator.
        (text, None)
    } else if let Some(i) = text.rfind(':') {
        (&text[..i], Some(&text[i + 1..]))
    } else {
        (text, None)
    };
    let (addr, prefix) = match addr_part.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (addr_part, None),
    };
    finish_host(t, addr, prefix, port_part, false)
}

fn finish_host(
    t: &Token<'_>,
    addr: &str,
    prefix: Option<&str>,
    port: Option<&str>,
    v6_only: bool,
) -> Result<HostCond, FilterError> {
    let bad = |problem| syntax(t, problem);
    let (addr, prefix) = match addr.split_once('/') {
        Some((a, p)) if prefix.is_none() => (a, Some(p)),
        _ => (addr, prefix),
    };
    let port = match port {
        None | Some("*") => None,
        Some(p) => Some(p.parse::<u16>().map_err(|_| bad("bad port number"))?),
    };
    let addr = match addr {
        "" | "*" => {
            if prefix.is_some() {
                return Err(bad("a prefix length needs an address"));
            }
            None
        }
        a => {
            let ip: IpAddr = if v6_only {
                IpAddr::V6(a.parse::<Ipv6Addr>().map_err(|_| bad("not an IPv6 address"))?)
            } else {
                a.parse::<Ipv4Addr>()
                    .map(IpAddr::V4)
                    .or_else(|_| a.parse::<Ipv6Addr>().map(IpAddr::V6))
                    .map_err(|_| bad("not an IP address, prefix or port"))?
            };
            let max = if ip.is_ipv4() { 32 } else { 128 };
            let len = match prefix {
                None => max,
                Some(p) => match p.parse::<u8>() {
                    Ok(n) if n <= max => n,
                    _ => return Err(bad("bad prefix length")),
                },
            };
            Some((ip, len))
        }
    };
    if addr.is_none() && port.is_none() {
        // `*` alone: any address, any port; ss accepts it as always true.
        return Ok(HostCond { addr: None, port: None });
    }
    Ok(HostCond { addr, port })
}

/// Parses a filter expression.
pub fn parse(input: &str) -> Result<Expr, FilterError> {
    let mut p = Parser {
        tokens: tokenize(input),
        pos: 0,
        depth: 0,
        conditions: 0,
    };
    let expr = p.or()?;
    if let Some(t) = p.peek() {
        return Err(syntax(
            t,
            if t.text == ")" {
                "unbalanced `)`"
            } else {
                "unexpected token"
            },
        ));
    }
    Ok(expr)
}

/// Where a `no` jump goes, before offsets are known.
#[derive(Debug, Clone, Copy)]
enum Target {
    /// 4 bytes past the end: the socket is dropped.
    Reject,
    Label(usize),
}

struct Emitted {
    code: u8,
    operand: Vec<u8>,
    no: Target,
}

#[derive(Default)]
struct Assembler {
    ops: Vec<Emitted>,
    /// Label → index of the op it precedes (`ops.len()` = the end).
    labels: Vec<Option<usize>>,
}

impl Assembler {
    fn label(&mut self) -> usize {
        self.labels.push(None);
        self.labels.len() - 1
    }

    fn place(&mut self, label: usize) {
        self.labels[label] = Some(self.ops.len());
    }

    fn emit(&mut self, code: u8, operand: Vec<u8>, no: Target) {
        self.ops.push(Emitted { code, operand, no });
    }

    /// Emits `e` so that control falls through when it holds and jumps to
    /// `on_false` when it does not.
    fn expr(&mut self, e: &Expr, on_false: Target) {
        match e {
            Expr::Host(end, host) => {
                let code = if *end == End::Source {
                    code::S_COND
                } else {
                    code::D_COND
                };
                self.emit(code, hostcond(host), on_false);
            }
            Expr::Port(end, cmp, port) => {
                let code = match (end, cmp) {
                    (End::Source, PortCmp::Ge) => code::S_GE,
                    (End::Source, PortCmp::Le) => code::S_LE,
                    (End::Destination, PortCmp::Ge) => code::D_GE,
                    (End::Destination, PortCmp::Le) => code::D_LE,
                };
                // The operand is a second op whose `no` field is the port.
                let mut operand = vec![0u8; OP_LEN];
                operand[2..4].copy_from_slice(&port.to_ne_bytes());
                self.emit(code, operand, on_false);
            }
            Expr::Mark { mark, mask } => {
                // `struct inet_diag_markcond { u32 mark; u32 mask; }`.
                let mut operand = Vec::with_capacity(8);
                operand.extend_from_slice(&mark.to_ne_bytes());
                operand.extend_from_slice(&mask.to_ne_bytes());
                self.emit(code::MARK_COND, operand, on_false);
            }
            Expr::And(a, b) => {
                self.expr(a, on_false);
                self.expr(b, on_false);
            }
            Expr::Or(a, b) => {
                let try_b = self.label();
                let done = self.label();
                self.expr(a, Target::Label(try_b));
                self.emit(code::JMP, Vec::new(), Target::Label(done));
                self.place(try_b);
                self.expr(b, on_false);
                self.place(done);
            }
            Expr::Not(a) => {
                let holds_not = self.label();
                self.expr(a, Target::Label(holds_not));
                self.emit(code::JMP, Vec::new(), on_false);
                self.place(holds_not);
            }
        }
    }

    fn finish(self) -> Result<Vec<u8>, FilterError> {
        let mut offsets = Vec::with_capacity(self.ops.len() + 1);
        let mut at = 0usize;
        for op in &self.ops {
            offsets.push(at);
            at += OP_LEN + op.operand.len();
        }
        offsets.push(at);
        let total = at;
        if total > MAX_BYTECODE_LEN {
            return Err(FilterError::TooLong(total));
        }
        let mut out = Vec::with_capacity(total);
        for (i, op) in self.ops.iter().enumerate() {
            let len = OP_LEN + op.operand.len();
            let target = match op.no {
                Target::Reject => total + 4,
                // Every label is placed by the time `finish` runs.
                Target::Label(l) => offsets[self.labels[l].unwrap_or(self.ops.len())],
            };
            let no = target - offsets[i];
            out.push(op.code);
            out.push(len as u8);
            out.extend_from_slice(&(no as u16).to_ne_bytes());
            out.extend_from_slice(&op.operand);
        }
        Ok(out)
    }
}

/// `struct inet_diag_hostcond { u8 family; u8 prefix_len; int port; be32 addr[]; }`;
/// port -1 matches any.
fn hostcond(h: &HostCond) -> Vec<u8> {
    let mut v = Vec::with_capacity(24);
    let port: i32 = h.port.map_or(-1, i32::from);
    match h.addr {
        None => {
            v.extend_from_slice(&[AF_UNSPEC, 0, 0, 0]);
            v.extend_from_slice(&port.to_ne_bytes());
        }
        Some((IpAddr::V4(a), len)) => {
            v.extend_from_slice(&[AF_INET, len, 0, 0]);
            v.extend_from_slice(&port.to_ne_bytes());
            v.extend_from_slice(&a.octets());
        }
        Some((IpAddr::V6(a), len)) => {
            v.extend_from_slice(&[AF_INET6, len, 0, 0]);
            v.extend_from_slice(&port.to_ne_bytes());
            v.extend_from_slice(&a.octets());
        }
    }
    v
}

/// Compiles a parsed expression into the kernel's bytecode.
pub fn compile(e: &Expr) -> Result<Bytecode, FilterError> {
    let mut asm = Assembler::default();
    asm.expr(e, Target::Reject);
    if asm.ops.is_empty() {
        asm.emit(code::NOP, Vec::new(), Target::Reject);
    }
    Ok(Bytecode(asm.finish()?.into()))
}

/// Why the running kernel would not run a filter.
#[derive(Debug, thiserror::Error)]
pub enum FilterCheckError {
    #[error("--filter: the kernel refused the compiled program; this kernel does not support an operation the expression uses")]
    Refused(#[source] super::DumpError),
    #[error("--filter: could not check the program with the kernel")]
    Check(#[source] super::DumpError),
}

/// Runs one dump of the current namespace with `filter` for each family, so
/// that a kernel which refuses the program (`inet_diag_bc_audit` answers
/// EINVAL, or EPERM for ops needing privileges) stops the start with a
/// clear error instead of every later dump failing or coming back empty.
pub fn check_with_kernel(filter: &Bytecode) -> Result<(), FilterCheckError> {
    use std::time::{Duration, Instant};
    /// A check dump of our own namespace is quick; this only bounds a hang.
    const CHECK_TIMEOUT: Duration = Duration::from_secs(5);
    let mut socket = super::DiagSocket::open(CHECK_TIMEOUT).map_err(FilterCheckError::Check)?;
    let mut buf = vec![0u8; super::RECV_BUFFER_BYTES];
    for family in [AF_INET, AF_INET6] {
        // No states: the kernel audits the program when the dump starts,
        // then walks no hash table, so the check costs nothing per socket
        // (with every state it would cost one filtered dump of the host).
        let request = super::DumpRequest {
            family,
            states: 0,
            ext: 0,
            filter: Some(filter.clone()),
        };
        match socket.dump(&request, &mut buf, Instant::now() + CHECK_TIMEOUT, |_, _| {}) {
            Ok(_) => {}
            Err(e @ super::DumpError::Kernel { errno }) if errno == libc::EINVAL || errno == libc::EPERM => {
                return Err(FilterCheckError::Refused(e))
            }
            Err(e) => return Err(FilterCheckError::Check(e)),
        }
    }
    Ok(())
}

/// Parses and compiles `--filter`; an empty or blank expression is no filter.
pub fn parse_filter(input: &str) -> Result<Option<Bytecode>, FilterError> {
    if input.trim().is_empty() {
        return Ok(None);
    }
    compile(&parse(input)?).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A socket as the kernel's `inet_diag_entry` sees it.
    #[derive(Debug, Clone, Copy)]
    struct Entry {
        family: u8,
        saddr: [u8; 16],
        daddr: [u8; 16],
        sport: u16,
        dport: u16,
        /// `sk_mark`.
        mark: u32,
    }

    fn entry(src: &str, sport: u16, dst: &str, dport: u16) -> Entry {
        let bytes = |a: &str| -> (u8, [u8; 16]) {
            match a.parse::<IpAddr>().unwrap() {
                IpAddr::V4(v4) => {
                    let mut b = [0u8; 16];
                    b[..4].copy_from_slice(&v4.octets());
                    (AF_INET, b)
                }
                IpAddr::V6(v6) => (AF_INET6, v6.octets()),
            }
        };
        let (family, saddr) = bytes(src);
        let (_, daddr) = bytes(dst);
        Entry {
            family,
            saddr,
            daddr,
            sport,
            dport,
            mark: 0,
        }
    }

    fn prefix_match(a: &[u8], b: &[u8], bits: u8) -> bool {
        let whole = usize::from(bits / 8);
        if a[..whole] != b[..whole] {
            return false;
        }
        let rest = bits % 8;
        rest == 0 || (a[whole] ^ b[whole]) >> (8 - rest) == 0
    }

    /// The kernel's `inet_diag_bc_audit`, written from its rules: yes walks
    /// must reach the end exactly; `no` must land on an op, the end, or
    /// 4 past it.
    fn audit(bc: &[u8]) -> Result<(), String> {
        let mut boundaries = vec![0usize];
        let mut at = 0usize;
        let mut checks = Vec::new();
        while at < bc.len() {
            let len = bc.len() - at;
            let (code, yes, no) = (
                bc[at],
                bc[at + 1] as usize,
                u16::from_ne_bytes([bc[at + 2], bc[at + 3]]) as usize,
            );
            let min_len = match code {
                code::S_COND | code::D_COND => {
                    let family = bc[at + 4];
                    let addr_len = match family {
                        AF_INET => 4,
                        AF_INET6 => 16,
                        AF_UNSPEC => 0,
                        _ => return Err("family".into()),
                    };
                    if bc[at + 5] as usize > addr_len * 8 {
                        return Err("prefix".into());
                    }
                    OP_LEN + 8 + addr_len
                }
                code::S_GE | code::S_LE | code::D_GE | code::D_LE => 2 * OP_LEN,
                code::JMP | code::NOP => OP_LEN,
                // `valid_markcond`: the op and a `struct inet_diag_markcond`.
                code::MARK_COND => OP_LEN + 8,
                _ => return Err(format!("code {code}")),
            };
            if min_len > len {
                return Err("short".into());
            }
            if code != code::NOP {
                if no < min_len || no > len + 4 || no % 4 != 0 {
                    return Err(format!("no {no} at {at}"));
                }
                checks.push(at + no);
            }
            if yes < min_len || yes > len + 4 || yes % 4 != 0 {
                return Err(format!("yes {yes} at {at}"));
            }
            at += yes;
            boundaries.push(at);
        }
        if at != bc.len() {
            return Err("yes walk overshoots".into());
        }
        for target in checks {
            if target != bc.len() + 4 && !boundaries.contains(&target) {
                return Err(format!("no target {target} is not an op"));
            }
        }
        Ok(())
    }

    /// The kernel's `inet_diag_bc_run` for the ops we emit.
    fn run(bc: &[u8], e: &Entry) -> bool {
        let mut at = 0isize;
        let len = bc.len() as isize;
        while at < len {
            let i = at as usize;
            let (code, yes, no) = (bc[i], bc[i + 1], u16::from_ne_bytes([bc[i + 2], bc[i + 3]]));
            let operand_port = || u16::from_ne_bytes([bc[i + 6], bc[i + 7]]);
            let holds = match code {
                code::NOP => true,
                code::JMP => false,
                code::S_GE => e.sport >= operand_port(),
                code::S_LE => e.sport <= operand_port(),
                code::D_GE => e.dport >= operand_port(),
                code::D_LE => e.dport <= operand_port(),
                code::MARK_COND => {
                    let word = |o: usize| u32::from_ne_bytes(bc[i + o..i + o + 4].try_into().unwrap());
                    (e.mark & word(8)) == word(4)
                }
                code::S_COND | code::D_COND => {
                    let family = bc[i + 4];
                    let bits = bc[i + 5];
                    let port = i32::from_ne_bytes(bc[i + 8..i + 12].try_into().unwrap());
                    let (addr, p) = if code == code::S_COND {
                        (&e.saddr, e.sport)
                    } else {
                        (&e.daddr, e.dport)
                    };
                    let cond = &bc[i + 12..];
                    if port != -1 && port != i32::from(p) {
                        false
                    } else if family != AF_UNSPEC && family != e.family {
                        e.family == AF_INET6
                            && family == AF_INET
                            && addr[..10] == [0; 10]
                            && addr[10..12] == [0xff, 0xff]
                            && prefix_match(&addr[12..], cond, bits)
                    } else {
                        bits == 0 || prefix_match(addr, cond, bits)
                    }
                }
                other => panic!("unexpected op {other}"),
            };
            at += if holds { isize::from(yes) } else { no as isize };
        }
        at == len
    }

    /// What the expression means, straight from the tree.
    fn eval(x: &Expr, e: &Entry) -> bool {
        match x {
            Expr::Not(a) => !eval(a, e),
            Expr::And(a, b) => eval(a, e) && eval(b, e),
            Expr::Or(a, b) => eval(a, e) || eval(b, e),
            Expr::Mark { mark, mask } => e.mark & mask == *mark,
            Expr::Port(end, cmp, port) => {
                let p = if *end == End::Source { e.sport } else { e.dport };
                match cmp {
                    PortCmp::Ge => p >= *port,
                    PortCmp::Le => p <= *port,
                }
            }
            Expr::Host(end, h) => {
                let (addr, p) = if *end == End::Source {
                    (&e.saddr, e.sport)
                } else {
                    (&e.daddr, e.dport)
                };
                if h.port.is_some_and(|want| want != p) {
                    return false;
                }
                match h.addr {
                    None => true,
                    Some((IpAddr::V4(a), bits)) => {
                        (e.family == AF_INET && prefix_match(&addr[..4], &a.octets(), bits))
                            || (e.family == AF_INET6
                                && addr[..12] == [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff]
                                && prefix_match(&addr[12..], &a.octets(), bits))
                    }
                    Some((IpAddr::V6(a), bits)) => e.family == AF_INET6 && prefix_match(addr, &a.octets(), bits),
                }
            }
        }
    }

    fn sockets() -> Vec<Entry> {
        let mut v = Vec::new();
        for (src, dst) in [
            ("127.0.0.1", "127.0.0.2"),
            ("127.0.0.2", "127.0.0.1"),
            ("10.1.2.3", "192.168.0.9"),
            ("0.0.0.0", "0.0.0.0"),
            ("::1", "::1"),
            ("::ffff:127.0.0.2", "::ffff:10.9.9.9"),
            ("2001:db8::5", "fe80::1"),
            ("::", "::"),
        ] {
            for (i, (sport, dport)) in [(22, 40000), (443, 1023), (1024, 443), (8080, 0), (65535, 1025)]
                .into_iter()
                .enumerate()
            {
                let mut s = entry(src, sport, dst, dport);
                s.mark = [0, 1, 0x101, 0xff00_0001, u32::MAX][i];
                v.push(s);
            }
        }
        v
    }

    /// Expressions covering every operator, both families, prefixes, ports
    /// and nesting: the compiled program passes the kernel's audit rules,
    /// and on every sample socket it keeps exactly what the expression says.
    #[test]
    fn compiled_programs_pass_the_audit_and_agree_with_the_expression() {
        let exprs = [
            "dport = :443",
            "dport == :443",
            "dport eq 443",
            "sport != :22",
            "sport neq :22",
            "dport < :1024",
            "dport lt :1024",
            "dport > :1024",
            "dport gt :1024",
            "sport <= :1024",
            "sport le :1024",
            "sport >= :1024",
            "sport ge :1024",
            "src 127.0.0.0/8",
            "src = 127.0.0.2",
            "dst != 127.0.0.1",
            "dst 127.0.0.1:22",
            "src 127.0.0.2:443",
            "src [::1]",
            "src [::1]:443",
            "dst [fe80::]/10",
            "src 2001:db8::/32",
            "src ::/0",
            "src 0.0.0.0/0",
            "src *:443",
            "dst :443",
            "sport > :1000 and sport < :2000",
            "sport > :1000 && sport < :2000",
            "sport = :22 or sport = :443",
            "sport = :22 || sport = :443 || dport = :0",
            "not sport = :22",
            "! sport = :22",
            "!(sport = :22 or dport = :443)",
            "( sport = :22 or sport = :443 ) and dst 127.0.0.0/8",
            "sport = :22 dst 127.0.0.0/8",
            "not ( src [::1] or src 127.0.0.1 ) and ( dport >= :1024 or not dport != :443 )",
            "not not not dport = :443",
            "((((dport = :443))))",
            "src 10.0.0.0/8 or src [2001:db8::]/32 and not dport = :0",
            "dst 10.9.9.9",
            "fwmark = 1",
            "fwmark = 0x1/0xff",
            "fwmark == 0x101",
            "fwmark != 0",
            "fwmark neq 0x1/0x1",
            "fwmark = 0 or fwmark = 0377/0xff00 and sport > :1000",
            "not fwmark = 0xffffffff/0xffffffff",
        ];
        for text in exprs {
            let parsed = parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            let bc = compile(&parsed).unwrap();
            audit(bc.as_bytes()).unwrap_or_else(|e| panic!("{text}: audit refuses: {e}"));
            for s in sockets() {
                assert_eq!(run(bc.as_bytes(), &s), eval(&parsed, &s), "{text} on {s:?}");
            }
        }
    }

    /// The meaning of the evaluator is itself checked on a few hand cases,
    /// so the comparison above is not circular.
    #[test]
    fn programs_keep_the_sockets_ss_would() {
        let keeps = |text: &str, s: &Entry| run(parse_filter(text).unwrap().unwrap().as_bytes(), s);
        let a = entry("127.0.0.2", 443, "127.0.0.1", 50000);
        let b = entry("::1", 8080, "::1", 443);
        let mapped = entry("::ffff:127.0.0.2", 22, "::ffff:127.0.0.1", 1);
        assert!(keeps("sport = :443", &a));
        assert!(!keeps("sport = :443", &b));
        assert!(keeps("dport = :443", &b));
        assert!(keeps("src 127.0.0.0/8", &a));
        assert!(!keeps("src 127.0.0.0/8", &b));
        assert!(keeps("src 127.0.0.0/8", &mapped), "v4-mapped sockets match v4 prefixes");
        assert!(keeps("src [::1]", &b));
        assert!(!keeps("src [::1]", &a));
        assert!(keeps("sport > :442 and sport < :444", &a));
        assert!(!keeps("sport > :443", &a));
        assert!(keeps("not src [::1] or dport = :443", &b));
        assert!(!keeps("not (src [::1] or src 127.0.0.2)", &a));
        assert!(keeps("src 127.0.0.2:443", &a));
        assert!(!keeps("src 127.0.0.2:444", &a));
    }

    /// The grammar's shape: ss's precedence (not binds tightest, and/or
    /// group from the left at one level), implicit and,
    /// operators and their words.
    #[test]
    fn parse_trees() {
        let host = |end, port| {
            Expr::Host(
                end,
                HostCond {
                    addr: None,
                    port: Some(port),
                },
            )
        };
        assert_eq!(parse("dport = :443").unwrap(), host(End::Destination, 443));
        assert_eq!(parse("dport :443").unwrap(), host(End::Destination, 443));
        assert_eq!(
            parse("sport = :1 or sport = :2 and dport = :3").unwrap(),
            Expr::And(
                Box::new(Expr::Or(Box::new(host(End::Source, 1)), Box::new(host(End::Source, 2)))),
                Box::new(host(End::Destination, 3))
            )
        );
        assert_eq!(
            parse("not sport = :1 dport = :3").unwrap(),
            Expr::And(
                Box::new(Expr::Not(Box::new(host(End::Source, 1)))),
                Box::new(host(End::Destination, 3))
            )
        );
        assert_eq!(
            parse("dst 10.0.0.0/8:80").unwrap(),
            Expr::Host(
                End::Destination,
                HostCond {
                    addr: Some(("10.0.0.0".parse().unwrap(), 8)),
                    port: Some(80)
                }
            )
        );
        assert_eq!(
            parse("src [2001:db8::]/32:443").unwrap(),
            Expr::Host(
                End::Source,
                HostCond {
                    addr: Some(("2001:db8::".parse().unwrap(), 32)),
                    port: Some(443)
                }
            )
        );
        assert_eq!(
            parse("sport > :1024").unwrap(),
            Expr::Not(Box::new(Expr::Port(End::Source, PortCmp::Le, 1024)))
        );
        assert_eq!(
            parse("  ").unwrap_err(),
            FilterError::UnexpectedEnd("expected a condition such as `dport = :443`")
        );
        assert_eq!(parse_filter("").unwrap(), None);
    }

    fn error_at(text: &str) -> (usize, String) {
        match parse_filter(text).unwrap_err() {
            FilterError::Syntax { column, token, .. } => (column, token),
            other => panic!("{text}: {other}"),
        }
    }

    /// A syntax error names the column and the offending token.
    /// fwmark takes C integers, with an optional mask (all ones without).
    #[test]
    fn fwmark_values() {
        let mark = |mark, mask| Expr::Mark { mark, mask };
        assert_eq!(parse("fwmark = 10").unwrap(), mark(10, u32::MAX));
        assert_eq!(parse("fwmark 0x10/0xf0").unwrap(), mark(16, 0xf0));
        assert_eq!(parse("fwmark = 010/0").unwrap(), mark(8, 0));
        assert_eq!(parse("fwmark != 1").unwrap(), Expr::Not(Box::new(mark(1, u32::MAX))));
        assert_eq!(error_at("fwmark = 0x1/zz"), (10, "0x1/zz".into()));
        assert_eq!(error_at("fwmark = 4294967296"), (10, "4294967296".into()));
        assert_eq!(error_at("fwmark > 1"), (8, ">".into()));
    }

    #[test]
    fn syntax_errors_point_at_the_token() {
        assert_eq!(error_at("dport = :443 and bogus = :1"), (18, "bogus".into()));
        assert_eq!(error_at("dport = :http"), (9, ":http".into()));
        assert_eq!(error_at("dport = :70000"), (9, ":70000".into()));
        assert_eq!(error_at("src 10.0.0.0/33"), (5, "10.0.0.0/33".into()));
        assert_eq!(error_at("src 10.0.0.300"), (5, "10.0.0.300".into()));
        assert_eq!(error_at("src [::1"), (5, "[::1".into()));
        assert_eq!(error_at("src [10.0.0.1]"), (5, "[10.0.0.1]".into()));
        assert_eq!(error_at("src > 10.0.0.1"), (5, ">".into()));
        assert_eq!(
            parse_filter("(dport = :1"),
            Err(FilterError::UnexpectedEnd("expected `)`"))
        );
        assert_eq!(error_at("dport = :1)"), (11, ")".into()));
        assert_eq!(error_at(") dport = :1"), (1, ")".into()));
        assert_eq!(error_at("dport = :1 or or"), (15, "or".into()));
        assert_eq!(error_at("état = :1"), (1, "état".into()));
        assert_eq!(error_at("dport = :1 and état"), (16, "état".into()));
        assert!(matches!(parse_filter("dport ="), Err(FilterError::UnexpectedEnd(_))));
        assert!(matches!(parse_filter("not"), Err(FilterError::UnexpectedEnd(_))));
        let message = parse_filter("dport = :443 and bogus").unwrap_err().to_string();
        assert!(
            message.contains("column 18") && message.contains("\"bogus\""),
            "{message}"
        );
    }

    /// A program the kernel's audit refuses (an op code it does not know)
    /// is reported as refused by the start-up check, not as an empty dump.
    #[test]
    fn kernel_refusal_is_an_error_at_the_check() {
        let unknown_op = Bytecode(vec![200u8, 4, 8, 0].into());
        let err = check_with_kernel(&unknown_op).unwrap_err();
        assert!(matches!(err, FilterCheckError::Refused(_)), "{err}");
        assert!(err.to_string().contains("refused"), "{err}");
        check_with_kernel(&parse_filter("dport = :443 or src [::1]").unwrap().unwrap()).unwrap();
    }

    /// Hostile nesting and length are refused with an error, never a stack
    /// overflow.
    #[test]
    fn deep_nesting_and_huge_expressions_are_refused() {
        let deep = format!("{}dport = :1{}", "( ".repeat(100_000), " )".repeat(100_000));
        assert!(matches!(
            parse_filter(&deep),
            Err(FilterError::Syntax { column: 129, .. })
        ));
        let nots = "not ".repeat(100_000) + "dport = :1";
        assert!(matches!(parse_filter(&nots), Err(FilterError::Syntax { .. })));
        let long = vec!["dport = :1"; 50_000].join(" or ");
        assert!(matches!(parse_filter(&long), Err(FilterError::Syntax { .. })));
        let fine = format!("{}dport = :1{}", "( ".repeat(64), " )".repeat(64));
        assert!(parse_filter(&fine).is_ok());
    }

    /// A program past what `op->no` can jump over is refused, not truncated.
    #[test]
    fn oversized_programs_are_refused() {
        let text = vec!["src [2001:db8::1]:443"; 1_990].join(" or ");
        assert!(matches!(parse_filter(&text), Err(FilterError::TooLong(_))));
    }
}
