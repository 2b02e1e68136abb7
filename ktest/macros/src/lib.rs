//! `#[ktest]`: declares an in-kernel test. See the `ktest` crate for its use.
//!
//! Arguments (all optional, comma-separated):
//! - `should_panic = "text"`: the test passes only if it panics with a message
//!   containing `text`;
//! - `expect_fault = N`: the test passes only if it takes CPU exception `N`;
//! - `timeout = S`: host-side time limit in seconds.

use proc_macro::TokenStream;
use quote::{format_ident, quote};
use syn::{Expr, ExprLit, ItemFn, Lit, MetaNameValue, Token, parse::Parser, parse_macro_input, punctuated::Punctuated};

#[proc_macro_attribute]
pub fn ktest(args: TokenStream, item: TokenStream) -> TokenStream {
    let func = parse_macro_input!(item as ItemFn);
    let parser = Punctuated::<MetaNameValue, Token![,]>::parse_terminated;
    let args = match parser.parse(args) {
        Ok(a) => a,
        Err(e) => return e.to_compile_error().into(),
    };

    let mut expect = quote!(::ktest::Expect::Return);
    let mut timeout = quote!(::ktest::DEFAULT_TIMEOUT_SECS);
    for arg in &args {
        let key = arg.path.get_ident().map(|i| i.to_string()).unwrap_or_default();
        let lit = match &arg.value {
            Expr::Lit(ExprLit { lit, .. }) => lit,
            other => {
                return syn::Error::new_spanned(other, "expected a literal").to_compile_error().into();
            }
        };
        match (key.as_str(), lit) {
            ("should_panic", Lit::Str(s)) => expect = quote!(::ktest::Expect::Panic(#s)),
            ("expect_fault", Lit::Int(n)) => expect = quote!(::ktest::Expect::Fault(#n)),
            ("timeout", Lit::Int(n)) => timeout = quote!(#n),
            _ => {
                return syn::Error::new_spanned(
                    arg,
                    "unknown ktest argument: use should_panic = \"..\", expect_fault = N or timeout = S",
                )
                .to_compile_error()
                .into();
            }
        }
    }

    if !func.sig.inputs.is_empty() || func.sig.asyncness.is_some() {
        return syn::Error::new_spanned(&func.sig, "a ktest takes no arguments and is not async").to_compile_error().into();
    }

    let name = &func.sig.ident;
    let name_str = name.to_string();
    let record = format_ident!("__KTEST_{}", name_str.to_uppercase());
    quote! {
        #[cfg(target_os = "none")]
        #func

        #[cfg(target_os = "none")]
        #[::ktest::linkme::distributed_slice(::ktest::TESTS)]
        #[linkme(crate = ::ktest::linkme)]
        static #record: ::ktest::Test = ::ktest::Test {
            module: module_path!(),
            name: #name_str,
            file: file!(),
            line: line!(),
            expect: #expect,
            timeout_secs: #timeout,
            func: #name,
        };
    }
    .into()
}
