arch_macros::model! {
    block attn_mlp {
        attention { heads = 4 }
        mlp { hidden = 4 * d_model }
    }

    model tiny {
        vocab = 1000
        d_model = 64
        context = 128
        decoder { stack = [mamba_mlp, attn_mlp] * 2 }
    }
}

fn main() {}
