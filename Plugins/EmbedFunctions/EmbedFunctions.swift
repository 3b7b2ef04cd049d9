import Foundation
import PackagePlugin

/// Embeds the session store's function library (`Functions/sessions.lua`) into the module as a
/// Swift constant at build time: one source of truth, and the library travels inside the binary
/// (no resource bundle to ship next to a copied executable).
@main
struct EmbedFunctions: BuildToolPlugin {
    func createBuildCommands(context: PluginContext, target: Target) throws -> [Command] {
        guard let target = target as? SourceModuleTarget else { return [] }
        let library = target.directoryURL.appending(path: "Functions").appending(path: "sessions.lua")
        let output = context.pluginWorkDirectoryURL.appending(path: "SessionFunctions+Source.swift")
        return [
            .buildCommand(
                displayName: "Embedding sessions.lua",
                executable: try context.tool(named: "FunctionEmbedder").url,
                arguments: [library.path(percentEncoded: false), output.path(percentEncoded: false)],
                inputFiles: [library],
                outputFiles: [output]
            )
        ]
    }
}
