//! The arithmetic itself, free of I/O, so that its semantics can be checked in isolation.
//!
//! Semantics follow the reference server (seed-behaviour §2.2) operation by operation, including
//! its quirks that clients may rely on (`power` takes `value` as the exponent, `log` falls back to
//! the natural logarithm for a base of `0`, trigonometric functions ignore `base`), except for
//! the unbounded factorial (defect D14), which here stops as soon as the product overflows.

use std::fmt;

/// An operation of `calculate` and `batch_calculate`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BasicOp {
    Add,
    Subtract,
    Multiply,
    Divide,
}

impl BasicOp {
    /// Wire names, in the order of the reference schema's `enum`.
    pub const NAMES: [&'static str; 4] = ["add", "subtract", "multiply", "divide"];

    /// Parses a wire name.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "add" => Some(Self::Add),
            "subtract" => Some(Self::Subtract),
            "multiply" => Some(Self::Multiply),
            "divide" => Some(Self::Divide),
            _ => None,
        }
    }

    /// The wire name, as printed in result texts and stored in history.
    pub fn name(self) -> &'static str {
        match self {
            Self::Add => "add",
            Self::Subtract => "subtract",
            Self::Multiply => "multiply",
            Self::Divide => "divide",
        }
    }

    /// Computes `a op b` in IEEE doubles; overflow gives `Infinity`, not an error.
    pub fn apply(self, a: f64, b: f64) -> Result<f64, OpError> {
        match self {
            Self::Add => Ok(a + b),
            Self::Subtract => Ok(a - b),
            Self::Multiply => Ok(a * b),
            Self::Divide if b == 0.0 => Err(OpError::DivisionByZero),
            Self::Divide => Ok(a / b),
        }
    }
}

impl fmt::Display for BasicOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An operation of `advanced_calculate`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AdvancedOp {
    Factorial,
    Power,
    Sqrt,
    Log,
    Sin,
    Cos,
    Tan,
}

impl AdvancedOp {
    /// Wire names, in the order of the reference schema's `enum`.
    pub const NAMES: [&'static str; 7] = ["factorial", "power", "sqrt", "log", "sin", "cos", "tan"];

    /// Parses a wire name.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "factorial" => Some(Self::Factorial),
            "power" => Some(Self::Power),
            "sqrt" => Some(Self::Sqrt),
            "log" => Some(Self::Log),
            "sin" => Some(Self::Sin),
            "cos" => Some(Self::Cos),
            "tan" => Some(Self::Tan),
            _ => None,
        }
    }

    /// The wire name, as printed in result texts and stored in history.
    pub fn name(self) -> &'static str {
        match self {
            Self::Factorial => "factorial",
            Self::Power => "power",
            Self::Sqrt => "sqrt",
            Self::Log => "log",
            Self::Sin => "sin",
            Self::Cos => "cos",
            Self::Tan => "tan",
        }
    }

    /// Computes the operation; `max_factorial` is the largest accepted factorial input.
    pub fn apply(self, value: f64, base: Option<f64>, max_factorial: u64) -> Result<f64, OpError> {
        match self {
            Self::Factorial => factorial(value, max_factorial),
            Self::Power => base.map(|b| b.powf(value)).ok_or(OpError::PowerNeedsBase),
            Self::Sqrt if value < 0.0 => Err(OpError::SqrtOfNegative),
            Self::Sqrt => Ok(value.sqrt()),
            Self::Log => log(value, base),
            Self::Sin => Ok(value.sin()),
            Self::Cos => Ok(value.cos()),
            Self::Tan => Ok(value.tan()),
        }
    }
}

impl fmt::Display for AdvancedOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// `value!` by a loop that stops once the product is infinite: at most 171 multiplications
/// whatever the input (defect D14), with the reference's results (`171!` and above = Infinity).
fn factorial(value: f64, max: u64) -> Result<f64, OpError> {
    if value < 0.0 || value.fract() != 0.0 {
        return Err(OpError::FactorialDomain);
    }
    if value > max as f64 {
        return Err(OpError::FactorialTooLarge(max));
    }
    // `value` is a non-negative integer no larger than `max`, so the cast is exact.
    let n = value as u64;
    let mut product = 1.0_f64;
    for i in 2..=n {
        product *= i as f64;
        if product.is_infinite() {
            break;
        }
    }
    Ok(product)
}

/// `ln(value) / ln(base)` when `base` is truthy in JavaScript terms (present, not 0, not NaN),
/// else `ln(value)`: the reference's rule, which makes a base of 0 mean "natural log".
fn log(value: f64, base: Option<f64>) -> Result<f64, OpError> {
    if value <= 0.0 {
        return Err(OpError::LogOfNonPositive);
    }
    match base {
        Some(b) if b != 0.0 && !b.is_nan() => Ok(value.ln() / b.ln()),
        _ => Ok(value.ln()),
    }
}

/// A calculation that has no result. These are tool execution errors (`isError: true`), not
/// protocol errors: the arguments were well-formed, the arithmetic is undefined.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpError {
    DivisionByZero,
    FactorialDomain,
    FactorialTooLarge(u64),
    PowerNeedsBase,
    SqrtOfNegative,
    LogOfNonPositive,
}

impl OpError {
    /// The reference's message, without prefix.
    fn message(self) -> String {
        match self {
            Self::DivisionByZero => "Division by zero is not allowed".to_owned(),
            Self::FactorialDomain => "Factorial requires non-negative integer".to_owned(),
            Self::FactorialTooLarge(max) => {
                format!("Factorial requires an input no greater than {max}")
            }
            Self::PowerNeedsBase => "Power operation requires base parameter".to_owned(),
            Self::SqrtOfNegative => "Square root of negative number".to_owned(),
            Self::LogOfNonPositive => "Logarithm requires positive number".to_owned(),
        }
    }

    /// The text of the `isError` tool result. The reference's texts are kept byte for byte
    /// (including its `MCP error -32602: ` prefix) because clients may compare them.
    pub fn tool_text(self) -> String {
        format!("MCP error -32602: {}", self.message())
    }

    /// Why a batch item failed (`Division by zero`), as the batch text and structured
    /// content report it.
    pub fn batch_reason(self) -> String {
        match self {
            Self::DivisionByZero => "Division by zero".to_owned(),
            other => other.message(),
        }
    }

    /// The line of a `batch_calculate` result for a failed item (`Error: Division by zero`).
    pub fn batch_line(self) -> String {
        format!("Error: {}", self.batch_reason())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: u64 = 1_000_000;

    #[test]
    fn basic_ops() {
        assert_eq!(BasicOp::Add.apply(100.0, 50.0), Ok(150.0));
        assert_eq!(BasicOp::Subtract.apply(7.5, 10.0), Ok(-2.5));
        assert_eq!(BasicOp::Multiply.apply(1e308, 10.0), Ok(f64::INFINITY));
        assert_eq!(BasicOp::Divide.apply(9.0, 3.0), Ok(3.0));
        assert_eq!(
            BasicOp::Divide.apply(1.0, 0.0),
            Err(OpError::DivisionByZero)
        );
        assert_eq!(
            BasicOp::Divide.apply(1.0, -0.0),
            Err(OpError::DivisionByZero)
        );
        for name in BasicOp::NAMES {
            assert_eq!(BasicOp::parse(name).map(BasicOp::name), Some(name));
        }
        assert_eq!(BasicOp::parse("pow"), None);
    }

    #[test]
    fn factorial_is_bounded_and_matches_reference() {
        let f = |v| AdvancedOp::Factorial.apply(v, None, MAX);
        assert_eq!(f(0.0), Ok(1.0));
        assert_eq!(f(-0.0), Ok(1.0));
        assert_eq!(f(1.0), Ok(1.0));
        assert_eq!(f(5.0), Ok(120.0));
        assert!(f(170.0).is_ok_and(f64::is_finite));
        assert_eq!(f(171.0), Ok(f64::INFINITY));
        assert_eq!(f(1e6), Ok(f64::INFINITY));
        assert_eq!(f(-1.0), Err(OpError::FactorialDomain));
        assert_eq!(f(2.5), Err(OpError::FactorialDomain));
        assert_eq!(f(1e6 + 1.0), Err(OpError::FactorialTooLarge(MAX)));
        assert_eq!(f(5e9), Err(OpError::FactorialTooLarge(MAX)));
        assert_eq!(f(f64::MAX), Err(OpError::FactorialTooLarge(MAX)));
        assert_eq!(
            AdvancedOp::Factorial.apply(u64::MAX as f64, None, u64::MAX),
            Ok(f64::INFINITY)
        );
    }

    #[test]
    fn advanced_ops_follow_reference_quirks() {
        let a = |op: AdvancedOp, v, b| op.apply(v, b, MAX);
        assert_eq!(a(AdvancedOp::Power, 3.0, Some(2.0)), Ok(8.0));
        assert_eq!(
            a(AdvancedOp::Power, 3.0, None),
            Err(OpError::PowerNeedsBase)
        );
        assert_eq!(a(AdvancedOp::Sqrt, 9.0, None), Ok(3.0));
        assert_eq!(
            a(AdvancedOp::Sqrt, -1.0, None),
            Err(OpError::SqrtOfNegative)
        );
        assert_eq!(a(AdvancedOp::Log, 8.0, Some(0.0)), Ok(8f64.ln()));
        assert_eq!(a(AdvancedOp::Log, 8.0, Some(1.0)), Ok(f64::INFINITY));
        assert_eq!(a(AdvancedOp::Log, 8.0, Some(2.0)), Ok(3.0));
        assert_eq!(
            a(AdvancedOp::Log, 0.0, None),
            Err(OpError::LogOfNonPositive)
        );
        assert_eq!(a(AdvancedOp::Sin, 1.0, Some(2.0)), Ok(1f64.sin()));
        assert_eq!(
            OpError::DivisionByZero.batch_line(),
            "Error: Division by zero"
        );
        assert_eq!(
            OpError::LogOfNonPositive.tool_text(),
            "MCP error -32602: Logarithm requires positive number"
        );
    }
}
