"""A small repository in five languages, and the real error output its programs print.

Each trace was printed by the real runtime (CPython 3.11, Node 20, Go 1.19, Rust 1.95,
OpenJDK 17) running these very files from other folders (/srv/...), as a container
would: the debug assistant must find them by path suffix.
"""

from __future__ import annotations

from pathlib import Path

FILES = {
    'src/shop/cart.py': (
        'import json\n'
        '\n'
        '\n'
        'def line_total(item):\n'
        '    return item["price"] * item["qty"]\n'
        '\n'
        '\n'
        'def total(cart):\n'
        '    return sum(line_total(item) for item in cart["items"])\n'
        '\n'
        '\n'
        'def load_and_total(raw):\n'
        '    cart = json.loads(raw, object_hook=check_item)\n'
        '    return total(cart)\n'
        '\n'
        '\n'
        'def check_item(obj):\n'
        '    if "price" in obj and obj["qty"] < 1:\n'
        '        raise ValueError("empty line")\n'
        '    return obj\n'
    ),
    'src/main.py': (
        'from shop.cart import load_and_total\n'
        '\n'
        'print(load_and_total(\'{"items": [{"price": 3, "quantity": 2}]}\'))\n'
    ),
    'web/cart.js': (
        'function lineTotal(item) {\n'
        '  return item.price.amount * item.qty;\n'
        '}\n'
        '\n'
        'function cartTotal(cart) {\n'
        '  return cart.items.map(lineTotal).reduce((a, b) => a + b, 0);\n'
        '}\n'
        '\n'
        'module.exports = { cartTotal };\n'
    ),
    'web/main.js': (
        'const { cartTotal } = require("./cart");\n'
        'console.log(cartTotal({ items: [{ qty: 2 }] }));\n'
    ),
    'cmd/server/main.go': (
        'package main\n'
        '\n'
        'import "fmt"\n'
        '\n'
        'type Cart struct {\n'
        '\tPrices map[string]int\n'
        '}\n'
        '\n'
        'func (c *Cart) Total(skus []string) int {\n'
        '\ttotal := 0\n'
        '\tfor _, sku := range skus {\n'
        '\t\ttotal += c.Prices[sku]\n'
        '\t}\n'
        '\treturn total\n'
        '}\n'
        '\n'
        'func main() {\n'
        '\tvar cart *Cart\n'
        '\tfmt.Println(cart.Total([]string{"A-1"}))\n'
        '}\n'
    ),
    'rust/shop/src/main.rs': (
        'fn line_total(prices: &[u32], index: usize) -> u32 {\n'
        '    prices[index] * 2\n'
        '}\n'
        '\n'
        'fn cart_total(prices: &[u32]) -> u32 {\n'
        '    (0..=prices.len()).map(|i| line_total(prices, i)).sum()\n'
        '}\n'
        '\n'
        'fn main() {\n'
        '    let prices = vec![3, 4, 5];\n'
        '    println!("{}", cart_total(&prices));\n'
        '}\n'
    ),
    'src/main/java/com/shop/Cart.java': (
        'package com.shop;\n'
        '\n'
        'import java.util.ArrayList;\n'
        'import java.util.List;\n'
        '\n'
        'public class Cart {\n'
        '    private final List<String> skus = new ArrayList<>();\n'
        '\n'
        '    public void add(String sku) {\n'
        '        skus.add(sku);\n'
        '    }\n'
        '\n'
        '    public int totalLength() {\n'
        '        int[] total = {0};\n'
        '        skus.forEach(s -> total[0] += s.length());\n'
        '        return total[0];\n'
        '    }\n'
        '}\n'
    ),
    'src/main/java/com/shop/Main.java': (
        'package com.shop;\n'
        '\n'
        'public class Main {\n'
        '    public static void main(String[] args) {\n'
        '        Cart cart = new Cart();\n'
        '        cart.add("A-1");\n'
        '        cart.add(null);\n'
        '        System.out.println(cart.totalLength());\n'
        '    }\n'
        '}\n'
    ),
    # Shares only `json/decoder.py` with the standard library's file in the Python trace.
    'lib/json/decoder.py': 'def decode(text):\n    return text\n',
}

PYTHON_TRACE = (
    'Traceback (most recent call last):\n'
    '  File "/srv/app/src/main.py", line 3, in <module>\n'
    '    print(load_and_total(\'{"items": [{"price": 3, "quantity": 2}]}\'))\n'
    '          ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^\n'
    '  File "/srv/app/src/shop/cart.py", line 13, in load_and_total\n'
    '    cart = json.loads(raw, object_hook=check_item)\n'
    '           ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^\n'
    '  File "/root/.pyenv/versions/3.11.7/lib/python3.11/json/__init__.py", line 359, in loads\n'
    '    return cls(**kw).decode(s)\n'
    '           ^^^^^^^^^^^^^^^^^^^\n'
    '  File "/root/.pyenv/versions/3.11.7/lib/python3.11/json/decoder.py", line 337, in decode\n'
    '    obj, end = self.raw_decode(s, idx=_w(s, 0).end())\n'
    '               ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^\n'
    '  File "/root/.pyenv/versions/3.11.7/lib/python3.11/json/dec'
    'oder.py", line 353, in raw_decode\n'
    '    obj, end = self.scan_once(s, idx)\n'
    '               ^^^^^^^^^^^^^^^^^^^^^^\n'
    '  File "/srv/app/src/shop/cart.py", line 18, in check_item\n'
    '    if "price" in obj and obj["qty"] < 1:\n'
    '                          ~~~^^^^^^^\n'
    "KeyError: 'qty'\n"
)

NODE_TRACE = (
    '/srv/app/web/cart.js:2\n'
    '  return item.price.amount * item.qty;\n'
    '                    ^\n'
    '\n'
    "TypeError: Cannot read properties of undefined (reading 'amount')\n"
    '    at lineTotal (/srv/app/web/cart.js:2:21)\n'
    '    at Array.map (<anonymous>)\n'
    '    at cartTotal (/srv/app/web/cart.js:6:21)\n'
    '    at Object.<anonymous> (/srv/app/web/main.js:2:13)\n'
    '    at Module._compile (node:internal/modules/cjs/loader:1521:14)\n'
    '    at Module._extensions..js (node:internal/modules/cjs/loader:1623:10)\n'
    '    at Module.load (node:internal/modules/cjs/loader:1266:32)\n'
    '    at Module._load (node:internal/modules/cjs/loader:1091:12)\n'
    '    at Function.executeUserEntryPoint [as runMain] (node:internal/modules/run_main:164:12)\n'
    '    at node:internal/main/run_main_module:28:49\n'
    '\n'
    'Node.js v20.20.2\n'
)

GO_TRACE = (
    'panic: runtime error: invalid memory address or nil pointer dereference\n'
    '[signal SIGSEGV: segmentation violation code=0x1 addr=0x0 pc=0x4813ff]\n'
    '\n'
    'goroutine 1 [running]:\n'
    'main.(*Cart).Total(...)\n'
    '\t/srv/go/cmd/server/main.go:12\n'
    'main.main()\n'
    '\t/srv/go/cmd/server/main.go:19 +0x3f\n'
    'exit status 2\n'
)

RUST_TRACE = (
    '\n'
    "thread 'main' (8648) panicked at src/main.rs:2:5:\n"
    'index out of bounds: the len is 3 but the index is 3\n'
    'stack backtrace:\n'
    '   0: __rustc::rust_begin_unwind\n'
    '             at /rustc/59807616e1fa2540724bfbac14d7976d7e4a3'
    '860/library/std/src/panicking.rs:689:5\n'
    '   1: core::panicking::panic_fmt\n'
    '             at /rustc/59807616e1fa2540724bfbac14d7976d7e4a3'
    '860/library/core/src/panicking.rs:80:14\n'
    '   2: core::panicking::panic_bounds_check\n'
    '             at /rustc/59807616e1fa2540724bfbac14d7976d7e4a3'
    '860/library/core/src/panicking.rs:271:5\n'
    '   3: shop::line_total\n'
    '             at ./src/main.rs:2:5\n'
    '   4: shop::cart_total::{{closure}}\n'
    '             at ./src/main.rs:6:32\n'
    '   5: core::iter::adapters::map::map_fold::{{closure}}\n'
    '             at /rustc/59807616e1fa2540724bfbac14d7976d7e4a3'
    '860/library/core/src/iter/adapters/map.rs:88:28\n'
    '   6: core::ops::try_trait::NeverShortCircuit<T>::wrap_mut_2::{{closure}}\n'
    '             at /rustc/59807616e1fa2540724bfbac14d7976d7e4a3'
    '860/library/core/src/ops/try_trait.rs:436:39\n'
    '   7: <core::ops::range::RangeInclusive<T> as core::iter::ra'
    'nge::RangeInclusiveIteratorImpl>::spec_try_fold\n'
    '             at /rustc/59807616e1fa2540724bfbac14d7976d7e4a3'
    '860/library/core/src/iter/range.rs:1202:21\n'
    '   8: core::iter::range::<impl core::iter::traits::iterator:'
    ':Iterator for core::ops::range::RangeInclusive<A>>::try_fold\n'
    '             at /rustc/59807616e1fa2540724bfbac14d7976d7e4a3'
    '860/library/core/src/iter/range.rs:1320:14\n'
    '   9: core::iter::range::<impl core::iter::traits::iterator:'
    ':Iterator for core::ops::range::RangeInclusive<A>>::fold\n'
    '             at /rustc/59807616e1fa2540724bfbac14d7976d7e4a3'
    '860/library/core/src/iter/mod.rs:380:18\n'
    '  10: <core::iter::adapters::map::Map<I,F> as core::iter::tr'
    'aits::iterator::Iterator>::fold\n'
    '             at /rustc/59807616e1fa2540724bfbac14d7976d7e4a3'
    '860/library/core/src/iter/adapters/map.rs:128:19\n'
    '  11: <u32 as core::iter::traits::accum::Sum>::sum\n'
    '             at /rustc/59807616e1fa2540724bfbac14d7976d7e4a3'
    '860/library/core/src/iter/traits/accum.rs:50:22\n'
    '  12: core::iter::traits::iterator::Iterator::sum\n'
    '             at /rustc/59807616e1fa2540724bfbac14d7976d7e4a3'
    '860/library/core/src/iter/traits/iterator.rs:3658:9\n'
    '  13: shop::cart_total\n'
    '             at ./src/main.rs:6:55\n'
    '  14: shop::main\n'
    '             at ./src/main.rs:11:20\n'
    '  15: core::ops::function::FnOnce::call_once\n'
    '             at /rustc/59807616e1fa2540724bfbac14d7976d7e4a3'
    '860/library/core/src/ops/function.rs:250:5\n'
    'note: Some details are omitted, run with `RUST_BACKTRACE=full` for a verbose backtrace.\n'
)

JAVA_TRACE = (
    'Exception in thread "main" java.lang.NullPointerException: C'
    'annot invoke "String.length()" because "<parameter2>" is null\n'
    '\tat com.shop.Cart.lambda$totalLength$0(Cart.java:15)\n'
    '\tat java.base/java.util.ArrayList.forEach(ArrayList.java:1511)\n'
    '\tat com.shop.Cart.totalLength(Cart.java:15)\n'
    '\tat com.shop.Main.main(Main.java:8)\n'
)


def make_repo(root: Path) -> Path:
    for rel, text in FILES.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root
