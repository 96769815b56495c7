arch_macros::model! {
    model tiny {
        vocab = 1000
        d_model = 64
        context = 128
        decoder {
            layers = 2
            attention { heads = 4 }
            mlp { act = gelu }
        }
    }
}

fn main() {}
